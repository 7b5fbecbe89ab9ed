"""Failures of the realistic fleet (`profile="fleet"`): onset, development and repair.

A car alternates between healthy spells and one failure at a time. While healthy, its next
failure begins at a rate of ``onset_rate`` per car-hour of simulated time (an exponential wait:
the chance between two readings is ``1 - exp(-rate * hours)``, so how often a car reports does
not change how often it fails). The failing part is drawn by :data:`MODE_WEIGHTS`. A failure
develops over :data:`DEVELOP_HOURS` (a tire leaks, a shock absorber wears, coolant creeps; an
outdated firmware or a degraded drive shaft is there at once) and lasts until its repair: a
service visit ``repair_hours`` after onset on average, or for outdated firmware the rollout
that updates it, ``rollout_hours`` after onset on average (both uniform between half and one
and a half times their mean).

Steady state (renewal-reward): with R the mean duration of a failure (the weights' mean of the
two repair times), the share of cars failing at any moment is

    share = rate * R / (1 + rate * R),   so   rate = share / ((1 - share) * R).

``failing_share`` sets the share and the onset rate follows. The fleet starts in that steady
state (each car failing with that chance, its failure's age drawn as a running fleet has it),
so a short run is as representative as a long one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ingest.cars.common import MODES, NO_ONSET, BoolArray, FloatArray, IntArray, mode_kind

if TYPE_CHECKING:
    from ingest.simulator import SimulationConfig

HOUR_MS = 3_600_000
HEALTHY = -1

#: Which part fails, when one does (tires and shock absorbers split evenly over the wheels).
KIND_WEIGHTS: dict[str, float] = {
    "tire_pressure": 0.35,
    "shock_absorber": 0.20,
    "drive_shaft": 0.15,
    "coolant": 0.15,
    "firmware": 0.15,
}
WHEELS_PER_KIND = {"tire_pressure": 4, "shock_absorber": 4}
MODE_WEIGHTS = np.array(
    [KIND_WEIGHTS[mode_kind(m)] / WHEELS_PER_KIND.get(mode_kind(m), 1) for m in MODES]
)

#: Hours from onset until the failure shows fully (log-uniform between the two); 0: at once.
DEVELOP_HOURS: dict[str, tuple[float, float]] = {
    "tire_pressure": (1 / 6, 3.0),  # a slow leak: 10 minutes to 3 hours
    "shock_absorber": (0.5, 3.0),
    "coolant": (0.5, 3.0),
    "drive_shaft": (0.0, 0.0),
    "firmware": (0.0, 0.0),
}
_DEVELOP = np.array([DEVELOP_HOURS[mode_kind(m)] for m in MODES])  # (low, high) per mode
REPAIR_SPREAD = (0.5, 1.5)  # a failure lasts its mean repair time times U(0.5, 1.5)


def mode_weights(config: SimulationConfig) -> FloatArray:
    """Each mode's share of onsets: :data:`MODE_WEIGHTS`, or the config's ``failure_mix``
    (weights per kind, e.g. ``(("coolant", 0.5), ("tire_pressure", 0.5))``; kinds left out do
    not fail), normalized."""
    if config.failure_mix is None:
        return MODE_WEIGHTS
    kinds = dict(config.failure_mix)
    unknown = set(kinds) - set(KIND_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown failure kinds {sorted(unknown)}; one of {sorted(KIND_WEIGHTS)}")
    weights = np.array(
        [kinds.get(mode_kind(m), 0.0) / WHEELS_PER_KIND.get(mode_kind(m), 1) for m in MODES]
    )
    if weights.sum() <= 0 or (weights < 0).any():
        raise ValueError("failure_mix needs non-negative weights, some positive")
    return weights / weights.sum()


def mean_repair_hours(config: SimulationConfig) -> FloatArray:
    """Mean repair time of each mode, in MODES order."""
    return np.array(
        [config.rollout_hours if m == "firmware" else config.repair_hours for m in MODES]
    )


def onset_rate(config: SimulationConfig) -> float:
    """Failure onsets per healthy car-hour that hold ``config.failing_share`` of cars failing."""
    share = config.failing_share
    mean_duration = float(mode_weights(config) @ mean_repair_hours(config))
    return share / ((1.0 - share) * mean_duration)


class Failures:
    """Per car: the active failure's mode (index into MODES, or HEALTHY), onset, repair time,
    how long it takes to develop, and a severity in [0, 1) that the car model maps to how far
    the failing sensor ends up (e.g. 20-24 psi)."""

    def __init__(self, config: SimulationConfig, rng: np.random.Generator, start_ms: int) -> None:
        self.rng = rng
        self.rate = onset_rate(config)
        self.weights = mode_weights(config)
        self.repair_hours = mean_repair_hours(config)
        n = config.cars
        self.mode = np.full(n, HEALTHY, np.int64)
        self.onset_ms = np.full(n, NO_ONSET, np.int64)
        self.repair_ms = np.zeros(n, np.int64)
        self.develop_ms = np.zeros(n, np.int64)
        self.severity = np.zeros(n)
        self._developed: tuple[int, FloatArray] | None = None  # progress at one time, cached
        self._start_in_steady_state(config.failing_share, start_ms)

    def _start_in_steady_state(self, share: float, start_ms: int) -> None:
        """Fail a ``share`` of cars, each as a random moment of a running fleet finds it: the
        mode in proportion to weight x duration, the duration length-biased, the age uniform."""
        cars = np.flatnonzero(self.rng.random(len(self.mode)) < share)
        if not len(cars):
            return
        time_weights = self.weights * self.repair_hours
        modes = self.rng.choice(len(MODES), size=len(cars), p=time_weights / time_weights.sum())
        low, high = (self.repair_hours[modes] * s for s in REPAIR_SPREAD)
        # Length-biased U(low, high): density proportional to d, by inverting its CDF.
        hours = np.sqrt(low**2 + self.rng.random(len(cars)) * (high**2 - low**2))
        age = self.rng.random(len(cars)) * hours
        onset = start_ms - (age * HOUR_MS).astype(np.int64)
        self._begin(cars, modes, onset)
        self.repair_ms[cars] = onset + (hours * HOUR_MS).astype(np.int64)

    def _begin(self, cars: IntArray, modes: IntArray, onset_ms: IntArray) -> None:
        rng = self.rng
        self._developed = None
        self.mode[cars] = modes
        self.onset_ms[cars] = onset_ms
        spread = rng.uniform(*REPAIR_SPREAD, len(cars))
        self.repair_ms[cars] = onset_ms + (self.repair_hours[modes] * spread * HOUR_MS).astype(
            np.int64
        )
        low, high = _DEVELOP[modes].T
        gradual = high > 0
        log_low, log_high = np.log(low[gradual]), np.log(high[gradual])
        hours = np.zeros(len(cars))
        hours[gradual] = np.exp(log_low + rng.random(gradual.sum()) * (log_high - log_low))
        self.develop_ms[cars] = (hours * HOUR_MS).astype(np.int64)
        self.severity[cars] = rng.random(len(cars))

    def advance(self, before_ms: int, now_ms: int) -> IntArray:
        """Repair what is due by ``now_ms``, then start the failures that began since
        ``before_ms``. Returns the mode each car was repaired of (HEALTHY if none)."""
        repaired = np.where((self.mode != HEALTHY) & (self.repair_ms <= now_ms), self.mode, HEALTHY)
        fixed = repaired != HEALTHY
        self._developed = None
        self.mode[fixed] = HEALTHY
        self.onset_ms[fixed] = NO_ONSET
        chance = -math.expm1(-self.rate * (now_ms - before_ms) / HOUR_MS)
        healthy = np.flatnonzero(self.mode == HEALTHY)
        cars = healthy[self.rng.random(len(healthy)) < chance]
        if len(cars):
            modes = self.rng.choice(len(MODES), size=len(cars), p=self.weights)
            # The onset falls somewhere in the interval (before_ms, now_ms].
            into = (self.rng.random(len(cars)) * (now_ms - before_ms)).astype(np.int64)
            self._begin(cars, modes, now_ms - into)
        return repaired

    def progress(self, now_ms: int, mode: str) -> FloatArray:
        """How far ``mode`` has developed in each car: 0 (healthy or just begun) to 1."""
        if self._developed is None or self._developed[0] != now_ms:
            with np.errstate(divide="ignore", invalid="ignore"):  # instant modes: 1
                done = np.nan_to_num((now_ms - self.onset_ms) / self.develop_ms, nan=1.0)
            self._developed = (now_ms, np.clip(done, 0.0, 1.0))
        return np.where(self.mode == MODES.index(mode), self._developed[1], 0.0)

    def labels(self) -> tuple[dict[str, BoolArray], dict[str, IntArray]]:
        """Per mode: which cars have it, and since when (NO_ONSET where they do not)."""
        failures = {m: self.mode == i for i, m in enumerate(MODES)}
        onsets = {m: np.where(failures[m], self.onset_ms, NO_ONSET) for m in MODES}
        return failures, onsets
