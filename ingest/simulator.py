"""A vectorized model of the seed's connected car, for fleets of 1 to 100,000+ cars.

All cars advance together, one numpy operation per sensor per step. The physics are those that
produced the seed's `car-sensor-data.csv` (recovered from it; the constants below reproduce
its step-to-step changes exactly), plus three additions so that long runs stay plausible:
cars sometimes change throttle, recharge when the battery is nearly empty, and a working
radiator holds the coolant near its operating temperature.

Failure modes (each, once it fires, stays on; chance per step, scaled by ``failure_rate``):
shock absorber 1% per wheel, tire pressure loss 0.5% per wheel, drive-shaft degradation 1%,
coolant overheating 0.2%, outdated firmware 4%. Every reading carries this ground truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.contract import SENSORS, WHEELS

MAX_SPEED = 38.9  # m/s; the speed a car settles at on full throttle
SPEED_RESPONSE = 0.2  # share of the gap to the throttle's speed closed per step
BATTERY_DRAIN_PER_SPEED = 0.008  # battery fraction per step per m/s
COOLANT_HEAT_PER_SPEED = 0.01  # °C per step per m/s
COOLANT_HEAT_PER_AMP = 0.098  # °C per step per A (healthy; the seed's "current draw × 0.5")
OVERHEAT_FACTOR = 5.0  # overheating: "× 2.5 instead of × 0.5"
RADIATOR_SET_POINT = 90.0  # °C; our addition: a working radiator cools above this
RADIATOR_GAIN = 0.3  # share of the excess over the set point removed per step
COOLANT_SENSOR_MAX = 1500.0  # °C; the sensor saturates here
VIBRATION_PER_SPEED = 100.0  # mV per m/s
DRIVE_SHAFT_VIBRATION_PER_SPEED = 150.0
BUMP_CHANCE = 0.05
FIRMWARE_CURRENT, FIRMWARE_OUTDATED = 2000, 1000

#: Chance per step that a healthy part fails (before ``failure_rate``).
FAILURE_CHANCE: dict[str, float] = {
    "shock_absorber": 0.01,  # per wheel
    "tire_pressure": 0.005,  # per wheel
    "drive_shaft": 0.01,
    "coolant": 0.002,
    "firmware": 0.04,
}

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SimulationConfig:
    cars: int = 100
    interval_ms: int = 10_000
    start_time_ms: int = 1_567_606_196_000  # the seed's first timestamp
    failure_rate: float = 1.0  # multiplies every failure chance
    seed: int = 42
    first_car: int = 1  # car ids are car<first_car> … car<first_car + cars - 1>
    throttle_change_chance: float = 0.02  # our addition: drivers change pace now and then
    recharge_below: float = 0.05  # our addition: battery fraction that sends a car to charge

    def __post_init__(self) -> None:
        if self.cars < 1:
            raise ValueError("cars must be at least 1")
        if self.interval_ms < 1:
            raise ValueError("interval_ms must be at least 1")
        if self.failure_rate < 0:
            raise ValueError("failure_rate must not be negative")


@dataclass
class ReadingBatch:
    """One step of the whole fleet, column by column (numpy arrays of length ``cars``)."""

    event_time_ms: int
    seq: int
    car_ids: list[str]
    sensors: dict[str, npt.NDArray[Any]]
    failures: dict[str, BoolArray]  # failure mode -> which cars have it

    def __len__(self) -> int:
        return len(self.car_ids)

    @property
    def failure_occurred(self) -> BoolArray:
        return np.logical_or.reduce(list(self.failures.values()))

    def failure_modes(self) -> list[list[str]]:
        """Per car, the names of its active failure modes."""
        names = list(self.failures)
        active = np.column_stack([self.failures[name] for name in names])
        return [[names[j] for j in np.flatnonzero(row)] for row in active]

    def records(self) -> Iterator[dict[str, Any]]:
        """Telemetry v1 records (plain dicts), labels included."""
        columns = [self.sensors[name].tolist() for name in SENSORS]
        occurred = self.failure_occurred.tolist()
        modes = self.failure_modes()
        for i, car_id in enumerate(self.car_ids):
            record: dict[str, Any] = {
                "car_id": car_id,
                "event_time": self.event_time_ms,
                "seq": self.seq,
            }
            for name, column in zip(SENSORS, columns, strict=True):
                record[name] = column[i]
            record["failure_occurred"] = occurred[i]
            record["failure_modes"] = modes[i]
            yield record


@dataclass
class _Fleet:
    """The state that persists between steps."""

    throttle: FloatArray
    speed: FloatArray
    coolant: FloatArray
    intake_air_temp: FloatArray
    intake_air_flow: FloatArray
    battery: FloatArray
    voltage: FloatArray
    current: FloatArray
    failures: dict[str, BoolArray] = field(default_factory=dict)


class FleetSimulator:
    """Advance a fleet step by step: ``for batch in FleetSimulator(config).run(steps): ...``.

    The same config (seed included) always yields the same readings.
    """

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        n = config.cars
        self.car_ids = [f"car{i}" for i in range(config.first_car, config.first_car + n)]
        rng = self.rng
        self.state = _Fleet(
            throttle=rng.uniform(0.0, 1.0, n),
            speed=rng.uniform(0.0, MAX_SPEED * 1.2, n),
            coolant=rng.uniform(18.0, 60.0, n),
            intake_air_temp=rng.uniform(15.0, 40.0, n),
            intake_air_flow=rng.uniform(1.0, 200.0, n),
            battery=rng.uniform(0.3, 1.0, n),
            voltage=rng.uniform(180.0, 260.0, n),
            current=rng.uniform(0.0, 60.0, n),
            failures={
                **{f"shock_absorber_{w}": np.zeros(n, bool) for w in WHEELS},
                **{f"tire_pressure_{w}": np.zeros(n, bool) for w in WHEELS},
                "drive_shaft": np.zeros(n, bool),
                "coolant": np.zeros(n, bool),
                "firmware": np.zeros(n, bool),
            },
        )
        self.steps_taken = 0

    def _fail(self) -> None:
        """Break parts at random; broken parts stay broken."""
        n, rate = self.config.cars, self.config.failure_rate
        for mode, active in self.state.failures.items():
            kind = mode.rsplit("_", 2)[0] if mode[-1].isdigit() else mode
            chance = min(1.0, FAILURE_CHANCE[kind] * rate)
            np.logical_or(active, self.rng.random(n) < chance, out=active)

    def step(self) -> ReadingBatch:
        """Advance every car by one reading interval and return the readings."""
        cfg, s, rng, n = self.config, self.state, self.rng, self.config.cars
        if self.steps_taken > 0:
            self._fail()
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
        batch = ReadingBatch(
            event_time_ms=cfg.start_time_ms + self.steps_taken * cfg.interval_ms,
            seq=self.steps_taken,
            car_ids=self.car_ids,
            sensors={name: np.array(values, copy=True) for name, values in sensors.items()},
            failures={mode: active.copy() for mode, active in s.failures.items()},
        )
        self.steps_taken += 1
        return batch

    def run(self, steps: int) -> Iterator[ReadingBatch]:
        for _ in range(steps):
            yield self.step()
