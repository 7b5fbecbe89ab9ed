"""The seed's car model (`profile="seed"`): the original demo's per-step rules, unchanged.

The physics are those that produced the seed's `car-sensor-data.csv` (recovered from it; the
constants below reproduce its step-to-step changes exactly), plus three additions so that long
runs stay plausible: cars sometimes change throttle, recharge when the battery is nearly empty,
and a working radiator holds the coolant near its operating temperature.

Failure modes (each, once it fires, stays on; chance per step, scaled by ``failure_rate``):
shock absorber 1% per wheel, tire pressure loss 0.5% per wheel, drive-shaft degradation 1%,
coolant overheating 0.2%, outdated firmware 4%. The chances are per reading, so they depend on
the reading interval; at the seed's 10 s every car fails within minutes. That is the seed's
behaviour, kept for its CSV and for comparisons; `ingest.cars.fleet` is the realistic fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    NO_ONSET,
    VIBRATION_PER_SPEED,
    BoolArray,
    FloatArray,
    IntArray,
    Step,
    mode_kind,
)

if TYPE_CHECKING:
    from ingest.simulator import SimulationConfig

SPEED_RESPONSE = 0.2  # share of the gap to the throttle's speed closed per step
BATTERY_DRAIN_PER_SPEED = 0.008  # battery fraction per step per m/s
COOLANT_HEAT_PER_SPEED = 0.01  # °C per step per m/s
COOLANT_HEAT_PER_AMP = 0.098  # °C per step per A (healthy; the seed's "current draw × 0.5")
OVERHEAT_FACTOR = 5.0  # overheating: "× 2.5 instead of × 0.5"
RADIATOR_SET_POINT = 90.0  # °C; our addition: a working radiator cools above this
RADIATOR_GAIN = 0.3  # share of the excess over the set point removed per step
COOLANT_SENSOR_MAX = 1500.0  # °C; the sensor saturates here
BUMP_CHANCE = 0.05

#: Chance per step that a healthy part fails (before ``failure_rate``).
FAILURE_CHANCE: dict[str, float] = {
    "shock_absorber": 0.01,  # per wheel
    "tire_pressure": 0.005,  # per wheel
    "drive_shaft": 0.01,
    "coolant": 0.002,
    "firmware": 0.04,
}


@dataclass
class _State:
    """The state that persists between steps."""

    throttle: FloatArray
    speed: FloatArray
    coolant: FloatArray
    intake_air_temp: FloatArray
    intake_air_flow: FloatArray
    battery: FloatArray
    voltage: FloatArray
    current: FloatArray
    failures: dict[str, BoolArray]
    onsets: dict[str, IntArray]


class SeedCars:
    """The seed's cars. Draws from ``rng`` in the original order, so a seed gives the readings
    it always gave."""

    def __init__(self, config: SimulationConfig, rng: np.random.Generator) -> None:
        self.config, self.rng = config, rng
        n = config.cars
        self.state = _State(
            throttle=rng.uniform(0.0, 1.0, n),
            speed=rng.uniform(0.0, MAX_SPEED * 1.2, n),
            coolant=rng.uniform(18.0, 60.0, n),
            intake_air_temp=rng.uniform(15.0, 40.0, n),
            intake_air_flow=rng.uniform(1.0, 200.0, n),
            battery=rng.uniform(0.3, 1.0, n),
            voltage=rng.uniform(180.0, 260.0, n),
            current=rng.uniform(0.0, 60.0, n),
            failures={mode: np.zeros(n, bool) for mode in MODES},
            onsets={mode: np.full(n, NO_ONSET, np.int64) for mode in MODES},
        )

    def _fail(self, time_ms: int) -> None:
        """Break parts at random; broken parts stay broken."""
        n, rate = self.config.cars, self.config.failure_rate
        for mode, active in self.state.failures.items():
            chance = min(1.0, FAILURE_CHANCE[mode_kind(mode)] * rate)
            new = ~active & (self.rng.random(n) < chance)
            np.logical_or(active, new, out=active)
            self.state.onsets[mode][new] = time_ms

    def step(self, time_ms: int, first: bool) -> Step:
        cfg, s, rng, n = self.config, self.state, self.rng, self.config.cars
        if not first:
            self._fail(time_ms)
            # Our addition: some drivers pick a new pace.
            change = rng.random(n) < cfg.throttle_change_chance
            s.throttle = np.where(change, rng.uniform(0.0, 1.0, n), s.throttle)
            # Seed physics: battery drains with the speed driven since the last reading...
            s.battery = s.battery - BATTERY_DRAIN_PER_SPEED * s.speed
            # ...speed closes a fifth of the gap to what the throttle asks for...
            s.speed = s.speed + SPEED_RESPONSE * (s.throttle * MAX_SPEED - s.speed)
            # ...and the coolant heats with speed and current (five times faster overheating).
            heat_per_amp = np.where(
                s.failures["coolant"], COOLANT_HEAT_PER_AMP * OVERHEAT_FACTOR, COOLANT_HEAT_PER_AMP
            )
            s.coolant = s.coolant + COOLANT_HEAT_PER_SPEED * s.speed + heat_per_amp * s.current
            # Our additions: a working radiator, a saturating sensor, charging stops.
            excess = np.maximum(s.coolant - RADIATOR_SET_POINT, 0.0)
            cooled = s.coolant - RADIATOR_GAIN * excess
            s.coolant = np.where(s.failures["coolant"], s.coolant, cooled)
            s.coolant = np.minimum(s.coolant, COOLANT_SENSOR_MAX)
            empty = s.battery < cfg.recharge_below
            s.battery = np.where(empty, rng.uniform(0.8, 1.0, n), s.battery)

        bump = rng.random(n) < BUMP_CHANCE
        sensors: dict[str, npt.NDArray[Any]] = {
            "coolant_temp": s.coolant,
            "intake_air_temp": s.intake_air_temp,
            "intake_air_flow_speed": s.intake_air_flow,
            "battery_percentage": s.battery,
            "battery_voltage": s.voltage,
            "current_draw": s.current,
            "speed": s.speed,
            "engine_vibration_amplitude": s.speed
            * np.where(
                s.failures["drive_shaft"], DRIVE_SHAFT_VIBRATION_PER_SPEED, VIBRATION_PER_SPEED
            ),
            "throttle_pos": s.throttle,
        }
        for wheel in WHEELS:
            flat = s.failures[f"tire_pressure_{wheel}"]
            sensors[f"tire_pressure_{wheel}"] = rng.integers(30, 35, n) - 10 * flat
        for wheel in WHEELS:
            broken = s.failures[f"shock_absorber_{wheel}"]
            # healthy [0,1) or [2,3) on a bump; broken [3,4) or [5,7) on a bump
            low = np.where(broken, np.where(bump, 5.0, 3.0), np.where(bump, 2.0, 0.0))
            width = np.where(broken & bump, 2.0, 1.0)
            sensors[f"accelerometer_{wheel}_value"] = low + width * rng.random(n)
        sensors["control_unit_firmware"] = np.where(
            s.failures["firmware"], FIRMWARE_OUTDATED, FIRMWARE_CURRENT
        )
        return Step(sensors, s.failures, s.onsets)
