"""Health rules: readable functions from readings to conditions (pure; no I/O).

Each rule looks at a reading (and, for rates, the reading before it) and answers HOLDS (the
condition holds), CLEAR (it does not) or UNKNOWN (this reading cannot tell, e.g. the car is
standing still): UNKNOWN keeps whatever the twin already says. Rules are written over columns
(numpy arrays, one value per reading), so the projector judges a whole batch of a car's
readings at once; `evaluate` asks them about a single reading. The thresholds sit halfway
between the healthy and failed outputs of the seed's car model (see DESIGN.md):

* tire pressure: healthy 30-34 psi, lost pressure 20-24 psi;
* shock absorber: healthy wheel accelerometer [0,1) or [2,3) on a bump, failed [3,4) or [5,7);
* drive shaft: engine vibration = speed x 100 when healthy, x 150 when degraded;
* coolant: per 10 s step the coolant rises by about current draw x 0.1 degC when healthy and
  x 0.5 when overheating, i.e. 0.01 vs 0.05 degC per ampere-second; and at or above 130 degC
  it is overheating whatever the rate (the simulator's working radiator holds healthy cars
  near 90-105 degC; the seed's model has no radiator, so its healthy cars also run hot);
* firmware: 2000 is current, 1000 is outdated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.contract import SENSORS, WHEELS

Reading = Mapping[str, Any]
#: A column per sensor (and ``event_time``, in ms): one value per reading.
Columns = Mapping[str, npt.NDArray[Any]]
Verdicts = npt.NDArray[np.int8]

HOLDS, CLEAR, UNKNOWN = 1, 0, -1

TIRE_PRESSURE_LOW_PSI = 27.0
SHOCK_ABSORBER_ACCEL = 3.0  # m/s^2
DRIVE_SHAFT_VIBRATION_PER_SPEED = 125.0  # mV per m/s
DRIVE_SHAFT_MIN_SPEED = 1.0  # m/s: below this the ratio is noise
COOLANT_HEATING_PER_AMP_SECOND = 0.03  # degC per (A * s)
COOLANT_MIN_CURRENT = 5.0  # A: below this the heating from speed dominates
COOLANT_HOT = 130.0  # degC: overheating whatever the rate (a saturated sensor stops rising)
COOLANT_MAX_GAP_S = 120.0  # a rate over a longer gap says nothing about the last step
CURRENT_FIRMWARE = 2000


@dataclass(frozen=True)
class Readings:
    """Readings of one car, as columns, each beside the reading before it."""

    now: Columns
    before: Columns  # row i: the reading before row i of `now` (anything where there is none)
    has_before: npt.NDArray[np.bool_]


def verdicts(
    holds: npt.NDArray[np.bool_], unknown: npt.NDArray[np.bool_] | None = None
) -> Verdicts:
    out = holds.astype(np.int8)
    if unknown is not None:
        out[unknown] = UNKNOWN
    return out


def tire_pressure_low(wheel: str) -> Callable[[Readings], Verdicts]:
    def rule(r: Readings) -> Verdicts:
        return verdicts(r.now[f"tire_pressure_{wheel}"] < TIRE_PRESSURE_LOW_PSI)

    return rule


def shock_absorber_worn(wheel: str) -> Callable[[Readings], Verdicts]:
    def rule(r: Readings) -> Verdicts:
        return verdicts(np.abs(r.now[f"accelerometer_{wheel}_value"]) >= SHOCK_ABSORBER_ACCEL)

    return rule


def drive_shaft_vibration(r: Readings) -> Verdicts:
    speed = r.now["speed"]
    with np.errstate(all="ignore"):  # standing still: the ratio is not used
        ratio = r.now["engine_vibration_amplitude"] / speed
    return verdicts(ratio > DRIVE_SHAFT_VIBRATION_PER_SPEED, speed < DRIVE_SHAFT_MIN_SPEED)


def coolant_overheating(r: Readings) -> Verdicts:
    """Too hot, or heating too fast per ampere over the last step (needs the previous reading)."""
    current = r.before["current_draw"]
    seconds = (r.now["event_time"] - r.before["event_time"]) / 1000.0
    no_rate = (
        ~r.has_before
        | (current < COOLANT_MIN_CURRENT)
        | ~((seconds > 0) & (seconds <= COOLANT_MAX_GAP_S))
    )
    with np.errstate(all="ignore"):  # rows without a rate compute garbage, unused
        rising = (r.now["coolant_temp"] - r.before["coolant_temp"]) / (current * seconds)
    hot = r.now["coolant_temp"] >= COOLANT_HOT
    return verdicts(hot | (rising > COOLANT_HEATING_PER_AMP_SECOND), ~hot & no_rate)


def firmware_outdated(r: Readings) -> Verdicts:
    return verdicts(r.now["control_unit_firmware"] < CURRENT_FIRMWARE)


@dataclass(frozen=True)
class Rule:
    name: str  # the condition's name, shared by every wheel
    wheel: str | None
    check: Callable[[Readings], Verdicts]
    evidence: tuple[str, ...]  # the sensors shown with the condition
    uses_previous: bool = False  # whether `check` reads the reading before (`Readings.before`)
    key: str = field(init=False)  # e.g. tire_pressure_low_1_2: one condition per wheel

    def __post_init__(self) -> None:
        # Set once: the fold asks for it for every rule of every reading.
        object.__setattr__(self, "key", f"{self.name}_{self.wheel}" if self.wheel else self.name)


RULES: tuple[Rule, ...] = (
    *(Rule("tire_pressure_low", w, tire_pressure_low(w), (f"tire_pressure_{w}",)) for w in WHEELS),
    *(
        Rule("shock_absorber", w, shock_absorber_worn(w), (f"accelerometer_{w}_value",))
        for w in WHEELS
    ),
    Rule(
        "drive_shaft_vibration",
        None,
        drive_shaft_vibration,
        ("engine_vibration_amplitude", "speed"),
    ),
    Rule(
        "coolant_overheating",
        None,
        coolant_overheating,
        ("coolant_temp", "current_draw"),
        uses_previous=True,
    ),
    Rule("firmware_outdated", None, firmware_outdated, ("control_unit_firmware",)),
)

#: Condition names as queried (`health.conditions.name`).
CONDITION_NAMES: tuple[str, ...] = tuple(dict.fromkeys(rule.name for rule in RULES))

#: What the rules read of a reading.
FIELDS: tuple[str, ...] = (*SENSORS, "event_time")


def judge(readings: Readings) -> dict[str, Verdicts]:
    """Every rule's verdict on every reading, by rule key (e.g. ``tire_pressure_low_1_2``)."""
    return {rule.key: rule.check(readings) for rule in RULES}


def verdict_matrix(readings: Readings) -> npt.NDArray[np.int8]:
    """Every rule's verdicts as one matrix: a row per reading, a column per rule of RULES."""
    return np.stack([rule.check(readings) for rule in RULES], axis=1)


def _one_row(reading: Reading) -> dict[str, npt.NDArray[Any]]:
    return {name: np.array([reading[name]]) for name in FIELDS}


def evaluate(reading: Reading, previous: Reading | None) -> dict[str, bool | None]:
    """Every rule's verdict on one reading: True, False or None (cannot tell)."""
    now = _one_row(reading)
    readings = Readings(
        now, now if previous is None else _one_row(previous), np.array([previous is not None])
    )
    return {key: None if v[0] == UNKNOWN else bool(v[0]) for key, v in judge(readings).items()}
