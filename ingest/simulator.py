"""A vectorized model of a connected-car fleet, for fleets of 1 to 100,000+ cars.

All cars advance together, one numpy operation per sensor per step. Two profiles:

* ``fleet`` (the default, `ingest.cars.fleet`): a fleet that behaves like one. Failures begin
  at a rate per car-hour of simulated time, develop as the physics says (a tire leaks, a shock
  absorber wears, coolant creeps) and are repaired; about ``failing_share`` (3%) of the cars
  have an active failure at any time. Cars differ, and the ambient temperature follows the day.
* ``seed`` (`ingest.cars.seed`): the original demo's per-step rules, exactly: the physics that
  produced the seed's `car-sensor-data.csv`, failures that fire per reading and stay on.

Every reading carries its ground truth: the active failure modes and each one's onset time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from fleet.contract import SENSORS
from ingest.cars.common import (
    FIRMWARE_CURRENT,
    FIRMWARE_OUTDATED,
    NO_ONSET,
    BoolArray,
    CarModel,
    IntArray,
)

__all__ = [
    "FIRMWARE_CURRENT",
    "FIRMWARE_OUTDATED",
    "PROFILES",
    "FleetSimulator",
    "ReadingBatch",
    "SimulationConfig",
]

Profile = Literal["fleet", "seed"]
PROFILES: tuple[str, ...] = get_args(Profile)
#: Options that only one profile reads; the other refuses a value other than the default.
SEED_ONLY = ("failure_rate", "throttle_change_chance", "recharge_below")
FLEET_ONLY = (
    "failing_share",
    "repair_hours",
    "rollout_hours",
    "failure_mix",
    "ambient_shift",
    "spread",
    "range_km",
    "charge_below",
)


@dataclass(frozen=True)
class SimulationConfig:
    cars: int = 100
    interval_ms: int = 10_000
    start_time_ms: int = 1_567_606_196_000  # the seed's first timestamp
    profile: Profile = "fleet"
    seed: int = 42
    first_car: int = 1  # car ids are car<first_car> … car<first_car + cars - 1>
    # profile "fleet": the share of cars with an active failure once the fleet runs, and the
    # mean hours from a failure's onset to its repair (a service visit; for outdated firmware,
    # the rollout that updates it). The onset rate follows (ingest/cars/failures.py).
    failing_share: float = 0.03
    repair_hours: float = 6.0
    rollout_hours: float = 12.0
    # profile "fleet", other fleets than the default one (a held-out evaluation's shifts):
    # which parts fail (weights per kind, ingest/cars/failures.py; None: the default mix),
    # degrees added to every car's climate, how far cars' own baselines spread around their
    # centre (1: the default ranges; 1.5: half as wide again), each car's battery range (km)
    # and the battery level that sends it to charge (drawn per car between the two bounds).
    failure_mix: tuple[tuple[str, float], ...] | None = None
    ambient_shift: float = 0.0
    spread: float = 1.0
    range_km: tuple[float, float] = (250.0, 450.0)
    charge_below: tuple[float, float] = (0.10, 0.25)
    # profile "seed": multiplies every per-step failure chance; drivers' chance per step to
    # change pace; battery fraction that sends a car to charge.
    failure_rate: float = 1.0
    throttle_change_chance: float = 0.02
    recharge_below: float = 0.05

    def __post_init__(self) -> None:
        if self.cars < 1:
            raise ValueError("cars must be at least 1")
        if self.interval_ms < 1:
            raise ValueError("interval_ms must be at least 1")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
        if self.failure_rate < 0:
            raise ValueError("failure_rate must not be negative")
        if not 0 <= self.failing_share < 1:
            raise ValueError("failing_share must be at least 0 and below 1")
        if self.spread < 0:
            raise ValueError("spread must not be negative")
        if not 0 < self.range_km[0] <= self.range_km[1]:
            raise ValueError("range_km must be two positive bounds, low first")
        if not 0 <= self.charge_below[0] <= self.charge_below[1] < 0.8:
            raise ValueError("charge_below must be two bounds in [0, 0.8), low first")
        if self.repair_hours <= 0 or self.rollout_hours <= 0:
            raise ValueError("repair_hours and rollout_hours must be positive")
        other = SEED_ONLY if self.profile == "fleet" else FLEET_ONLY
        defaults = {f.name: f.default for f in fields(self)}
        for name in other:
            if getattr(self, name) != defaults[name]:
                owner = "seed" if name in SEED_ONLY else "fleet"
                raise ValueError(f"{name} is an option of profile {owner}, not {self.profile}")


@dataclass
class ReadingBatch:
    """One step of the whole fleet, column by column (numpy arrays of length ``cars``)."""

    event_time_ms: int
    seq: int
    car_ids: list[str]
    sensors: dict[str, npt.NDArray[Any]]
    failures: dict[str, BoolArray]  # failure mode -> which cars have it
    # failure mode -> since when (ms; meaningful where the mode is active). Not in the Avro
    # contract (see README, "fleet simulate"): evaluation takes it from here.
    onsets: dict[str, IntArray] = field(default_factory=dict)

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

    def failure_onsets(self) -> list[dict[str, int]]:
        """Per car, each active failure mode's onset time (ms since the epoch)."""
        out: list[dict[str, int]] = [{} for _ in self.car_ids]
        for mode, active in self.failures.items():
            onset = self.onsets.get(mode)
            for i in np.flatnonzero(active).tolist():
                out[i][mode] = int(onset[i]) if onset is not None else NO_ONSET
        return out

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


class FleetSimulator:
    """Advance a fleet step by step: ``for batch in FleetSimulator(config).run(steps): ...``.

    The same config (seed included) always yields the same readings.
    """

    def __init__(self, config: SimulationConfig) -> None:
        from ingest.cars.fleet import FleetCars
        from ingest.cars.seed import SeedCars

        self.config = config
        self.rng = np.random.default_rng(config.seed)
        n = config.cars
        self.car_ids = [f"car{i}" for i in range(config.first_car, config.first_car + n)]
        self.model: CarModel = (
            SeedCars(config, self.rng) if config.profile == "seed" else FleetCars(config, self.rng)
        )
        self.steps_taken = 0

    def step(self) -> ReadingBatch:
        """Advance every car by one reading interval and return the readings."""
        cfg = self.config
        time_ms = cfg.start_time_ms + self.steps_taken * cfg.interval_ms
        step = self.model.step(time_ms, first=self.steps_taken == 0)
        batch = ReadingBatch(
            event_time_ms=time_ms,
            seq=self.steps_taken,
            car_ids=self.car_ids,
            sensors={name: np.array(values, copy=True) for name, values in step.sensors.items()},
            failures={mode: active.copy() for mode, active in step.failures.items()},
            onsets={mode: onset.copy() for mode, onset in step.onsets.items()},
        )
        self.steps_taken += 1
        return batch

    def run(self, steps: int) -> Iterator[ReadingBatch]:
        for _ in range(steps):
            yield self.step()
