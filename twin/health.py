"""Health rules: readable functions from readings to conditions (pure; no I/O).

Each rule looks at the newest reading (and, for rates, the reading before it) and answers
True (the condition holds), False (it does not) or None (this reading cannot tell, e.g. the car
is standing still): None keeps whatever the twin already says. The thresholds sit halfway
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

from fleet.contract import WHEELS

Reading = Mapping[str, Any]

TIRE_PRESSURE_LOW_PSI = 27.0
SHOCK_ABSORBER_ACCEL = 3.0  # m/s^2
DRIVE_SHAFT_VIBRATION_PER_SPEED = 125.0  # mV per m/s
DRIVE_SHAFT_MIN_SPEED = 1.0  # m/s: below this the ratio is noise
COOLANT_HEATING_PER_AMP_SECOND = 0.03  # degC per (A * s)
COOLANT_MIN_CURRENT = 5.0  # A: below this the heating from speed dominates
COOLANT_HOT = 130.0  # degC: overheating whatever the rate (a saturated sensor stops rising)
COOLANT_MAX_GAP_S = 120.0  # a rate over a longer gap says nothing about the last step
CURRENT_FIRMWARE = 2000


def tire_pressure_low(wheel: str) -> Callable[[Reading, Reading | None], bool | None]:
    def rule(reading: Reading, _previous: Reading | None) -> bool | None:
        return float(reading[f"tire_pressure_{wheel}"]) < TIRE_PRESSURE_LOW_PSI

    return rule


def shock_absorber_worn(wheel: str) -> Callable[[Reading, Reading | None], bool | None]:
    def rule(reading: Reading, _previous: Reading | None) -> bool | None:
        return abs(float(reading[f"accelerometer_{wheel}_value"])) >= SHOCK_ABSORBER_ACCEL

    return rule


def drive_shaft_vibration(reading: Reading, _previous: Reading | None) -> bool | None:
    speed = float(reading["speed"])
    if speed < DRIVE_SHAFT_MIN_SPEED:
        return None
    return float(reading["engine_vibration_amplitude"]) / speed > DRIVE_SHAFT_VIBRATION_PER_SPEED


def coolant_overheating(reading: Reading, previous: Reading | None) -> bool | None:
    """Too hot, or heating too fast per ampere over the last step (needs the previous reading)."""
    if float(reading["coolant_temp"]) >= COOLANT_HOT:
        return True
    if previous is None:
        return None
    current = float(previous["current_draw"])
    seconds = (int(reading["event_time"]) - int(previous["event_time"])) / 1000.0
    if current < COOLANT_MIN_CURRENT or not 0 < seconds <= COOLANT_MAX_GAP_S:
        return None
    rise = float(reading["coolant_temp"]) - float(previous["coolant_temp"])
    return rise / (current * seconds) > COOLANT_HEATING_PER_AMP_SECOND


def firmware_outdated(reading: Reading, _previous: Reading | None) -> bool | None:
    return int(reading["control_unit_firmware"]) < CURRENT_FIRMWARE


@dataclass(frozen=True)
class Rule:
    name: str  # the condition's name, shared by every wheel
    wheel: str | None
    check: Callable[[Reading, Reading | None], bool | None]
    evidence: tuple[str, ...]  # the sensors shown with the condition
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
    Rule("coolant_overheating", None, coolant_overheating, ("coolant_temp", "current_draw")),
    Rule("firmware_outdated", None, firmware_outdated, ("control_unit_firmware",)),
)

#: Condition names as queried (`health.conditions.name`).
CONDITION_NAMES: tuple[str, ...] = tuple(dict.fromkeys(rule.name for rule in RULES))


def evaluate(reading: Reading, previous: Reading | None) -> dict[str, bool | None]:
    """Every rule's verdict on this reading, by rule key (e.g. ``tire_pressure_low_1_2``)."""
    return {rule.key: rule.check(reading, previous) for rule in RULES}
