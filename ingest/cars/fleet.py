"""The realistic fleet (`profile="fleet"`, the default): cars that differ, days that warm and
cool, failures that come, develop and get repaired (`ingest.cars.failures`).

The seed's physics, made continuous in time so that the reading interval changes how often a
car is sampled, not how it behaves: every per-step constant of the seed holds at its 10 s step
and scales with the interval. What differs from the seed:

* **Each car its own baseline:** nominal tire pressures (30.6-33.4 psi), suspension stiffness,
  engine vibration per m/s (92-108 mV), heat per ampere, coolant operating point (86-94 °C),
  battery range (250-450 km), intake air flow, and a climate.
* **Ambient temperature** follows the day (warmest at 15:00 in each car's own time zone) and
  sets the intake air temperature and where the radiator holds the coolant (+0.3 °C per °C);
  a car that makes little heat cools towards it.
* **Battery:** drains with distance driven (the seed's drain with speed, at a car's range);
  below its own threshold (10-25%) the car stops to charge (speed 0, +1.8% a minute) until it
  is full enough (80-100%), then drives on.
* **Failures develop:** a leaking tire loses pressure linearly to 20-24 psi; a worn shock
  absorber's accelerometer amplitude grows to the seed's failed signature ([3,4), [5,7) on a
  bump); an overheating coolant's heat per ampere grows to five times the healthy one while
  the radiator gives up. Outdated firmware (1000) and a degraded drive shaft (vibration =
  speed x 150) are there at once. A repair restores the part (and a repaired cooling system
  starts from the ambient temperature).

Healthy cars stay clear of every rule of `twin/health.py` (tests check it), and a developed
failure shows as the seed's failure does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fleet.contract import WHEELS
from ingest.cars.common import (
    DRIVE_SHAFT_VIBRATION_PER_SPEED,
    FIRMWARE_CURRENT,
    FIRMWARE_OUTDATED,
    MAX_SPEED,
    MODES,
    FloatArray,
    Step,
)
from ingest.cars.failures import Failures

if TYPE_CHECKING:
    from ingest.simulator import SimulationConfig

SEED_STEP_S = 10.0  # the seed's constants are per 10 s step
SPEED_KEEP = 0.8  # per 10 s, the share of the gap to the throttle's speed that remains
PACE_CHANGE_S = 500.0  # mean time between a driver's changes of pace (the seed's 2% a step)
CHARGE_PER_S = 3e-4  # battery fraction per second at a charging stop (80% in 45 minutes)
COOLANT_HEAT_PER_SPEED = 0.001  # °C per second per m/s
OVERHEAT_FACTOR = 5.0  # a fully developed coolant failure heats five times faster per ampere
RADIATOR_KEEP = 0.7  # per 10 s, the share of the excess over the set point a radiator leaves
SET_POINT_PER_AMBIENT = 0.3  # °C of set point per °C of ambient above 20 °C
PASSIVE_COOLING_PER_S = 1e-3  # share of the gap to ambient lost per second
COOLANT_SENSOR_MAX = 1500.0  # °C; the sensor saturates here
BUMP_CHANCE = 0.05  # per reading: the seed's share of readings that catch a bump
TIRE_NOISE_PSI = 0.3
FAILED_PSI = (20.5, 23.5)  # where a leak ends (readings then round into 20-24 psi)


def _per_interval(keep_per_seed_step: float, seconds: float) -> float:
    """The share left after ``seconds`` of a decay that leaves ``keep`` per 10 s."""
    return float(keep_per_seed_step ** (seconds / SEED_STEP_S))


class FleetCars:
    def __init__(self, config: SimulationConfig, rng: np.random.Generator) -> None:
        self.config, self.rng = config, rng
        n = config.cars
        u = rng.uniform
        # Each car's own baseline.
        k = config.spread

        def spread(low: float, high: float) -> FloatArray:
            """A car's own baseline: U(low, high), or as wide ``spread`` times around its centre
            (the same draws either way, so a seed's cars keep their order)."""
            drawn = u(low, high, n)
            if k == 1.0:
                return drawn
            centre = (low + high) / 2
            return centre + k * (drawn - centre)

        self.tire_nominal = {w: spread(30.6, 33.4) for w in WHEELS}
        self.suspension = spread(0.75, 0.95)  # healthy accelerometer scale: [0,s) or [2s,3s)
        self.vibration_per_speed = spread(92.0, 108.0)
        self.heat_per_amp = spread(0.0085, 0.0105)  # °C per A per s (the seed's 0.098 per 10 s)
        self.operating_point = spread(86.0, 94.0)
        self.range_m = u(config.range_km[0] * 1e3, config.range_km[1] * 1e3, n)
        self.charge_below, self.charge_to = u(*config.charge_below, n), u(0.8, 1.0, n)
        self.base_flow = u(20.0, 200.0, n)
        self.intake_offset = u(5.0, 15.0, n)
        self.voltage_nominal = u(180.0, 260.0, n)
        self.current = u(0.0, 60.0, n)
        self.climate_mean = u(5.0, 25.0, n) + config.ambient_shift
        self.climate_swing = u(3.0, 8.0, n)
        self.time_zone_h = u(-3.0, 3.0, n)
        # The state that changes.
        start = config.start_time_ms
        self.throttle = u(0.0, 1.0, n)
        self.speed = u(0.0, MAX_SPEED, n)
        self.battery = u(0.3, 1.0, n)
        self.charging = np.zeros(n, bool)
        self.coolant = self._set_point(self._ambient(start)) - u(0.0, 10.0, n)
        self.failures = Failures(config, rng, start)
        self.time_ms = start

    def _ambient(self, time_ms: int) -> FloatArray:
        local_hour = (time_ms / 3_600_000 + self.time_zone_h) % 24
        return self.climate_mean + self.climate_swing * np.cos(2 * np.pi * (local_hour - 15) / 24)

    def _set_point(self, ambient: FloatArray) -> FloatArray:
        return self.operating_point + SET_POINT_PER_AMBIENT * (ambient - 20.0)

    def _drive(self, dt: float, n: int) -> None:
        """Pace changes, charging stops, battery and speed over ``dt`` seconds."""
        rng = self.rng
        change = ~self.charging & (rng.random(n) < -math.expm1(-dt / PACE_CHANGE_S))
        self.throttle = np.where(change, rng.uniform(0.0, 1.0, n), self.throttle)
        # The battery drains with the distance driven since the last reading, or charges.
        drained = self.battery - self.speed * dt / self.range_m
        charged = np.minimum(self.battery + CHARGE_PER_S * dt, 1.0)
        self.battery = np.where(self.charging, charged, drained)
        stop = ~self.charging & (self.battery < self.charge_below)
        go = self.charging & (self.battery >= self.charge_to)
        self.charging = (self.charging | stop) & ~go
        self.throttle = np.where(stop, 0.0, np.where(go, rng.uniform(0.2, 1.0, n), self.throttle))
        keep = _per_interval(SPEED_KEEP, dt)
        self.speed = keep * self.speed + (1 - keep) * self.throttle * MAX_SPEED
        self.speed[self.charging & (self.speed < 0.5)] = 0.0  # parked at the charger

    def _heat(self, dt: float, time_ms: int, ambient: FloatArray) -> None:
        """Coolant: heat from speed and current, a radiator above the set point, passive
        cooling towards ambient. A developing failure multiplies the heat per ampere and
        takes the radiator away."""
        failing = self.failures.progress(time_ms, "coolant")
        per_amp = self.heat_per_amp * (1.0 + (OVERHEAT_FACTOR - 1.0) * failing)
        self.coolant = self.coolant + dt * (
            COOLANT_HEAT_PER_SPEED * self.speed + per_amp * self.current
        )
        excess = np.maximum(self.coolant - self._set_point(ambient), 0.0)
        radiator = (1.0 - _per_interval(RADIATOR_KEEP, dt)) * (1.0 - failing)
        passive = -math.expm1(-PASSIVE_COOLING_PER_S * dt)
        self.coolant = self.coolant - radiator * excess - passive * (self.coolant - ambient)
        self.coolant = np.minimum(self.coolant, COOLANT_SENSOR_MAX)

    def step(self, time_ms: int, first: bool) -> Step:
        n, rng = self.config.cars, self.rng
        ambient = self._ambient(time_ms)
        if not first:
            dt = (time_ms - self.time_ms) / 1000.0
            repaired = self.failures.advance(self.time_ms, time_ms)
            cooled = repaired == MODES.index("coolant")
            self.coolant[cooled] = ambient[cooled]  # hours in the workshop
            self._drive(dt, n)
            self._heat(dt, time_ms, ambient)
        self.time_ms = time_ms
        failures, onsets = self.failures.labels()
        progress = self.failures.progress
        sensors: dict[str, npt.NDArray[Any]] = {
            "coolant_temp": self.coolant,
            "intake_air_temp": ambient + self.intake_offset,
            "intake_air_flow_speed": self.base_flow * (0.3 + 0.7 * self.throttle),
            "battery_percentage": self.battery,
            "battery_voltage": self.voltage_nominal * (0.95 + 0.05 * self.battery),
            "current_draw": self.current,
            "speed": self.speed,
            "engine_vibration_amplitude": self.speed
            * np.where(
                failures["drive_shaft"], DRIVE_SHAFT_VIBRATION_PER_SPEED, self.vibration_per_speed
            ),
            "throttle_pos": self.throttle,
        }
        for wheel in WHEELS:
            # A leak takes the pressure linearly from the car's nominal to 20-24 psi.
            nominal = self.tire_nominal[wheel]
            failed = FAILED_PSI[0] + (FAILED_PSI[1] - FAILED_PSI[0]) * self.failures.severity
            pressure = nominal + (failed - nominal) * progress(time_ms, f"tire_pressure_{wheel}")
            noisy = pressure + rng.normal(0.0, TIRE_NOISE_PSI, n)
            sensors[f"tire_pressure_{wheel}"] = np.rint(noisy).astype(np.int64)
        bump = rng.random(n) < BUMP_CHANCE
        for wheel in WHEELS:
            # Wear moves the healthy [0,s) / [2s,3s) (on a bump) to the failed [3,4) / [5,7).
            wear = progress(time_ms, f"shock_absorber_{wheel}")
            s = self.suspension
            low = (1 - wear) * np.where(bump, 2 * s, 0.0) + wear * np.where(bump, 5.0, 3.0)
            width = (1 - wear) * s + wear * np.where(bump, 2.0, 1.0)
            sensors[f"accelerometer_{wheel}_value"] = low + width * rng.random(n)
        sensors["control_unit_firmware"] = np.where(
            failures["firmware"], FIRMWARE_OUTDATED, FIRMWARE_CURRENT
        )
        return Step(sensors, failures, onsets)
