"""When a failing part is a *fault*: out of spec by the car model's own rules.

A failure's onset is when its part starts to degrade (the simulator's label); a gradual one
reads healthy for a while (five minutes into a three-hour leak a tire has lost 0.3 psi, the
sensor's noise). It becomes a fault when the twin's health rule for it (twin/health.py: a tire
below 27 psi, an accelerometer at 3 m/s² or more, vibration over 125 mV per m/s, coolant heating
over 0.03 °C per ampere-second or at 130 °C, firmware below 2000) holds. The evaluation measures
detection from the fault onset (ml/alarms.py); the classifier learns from readings out of spec
(ml/train.py), since a degrading part still in spec cannot be told from a healthy one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.contract import FAILURE_MODES, WHEELS
from ml import verdict
from twin import health

Bools = npt.NDArray[np.bool_]

#: The twin's health rule (twin/health.py) that says each mode's part is out of spec.
FAULT_RULES: dict[str, str] = {
    **{f"tire_pressure_{w}": f"tire_pressure_low_{w}" for w in WHEELS},
    **{f"shock_absorber_{w}": f"shock_absorber_{w}" for w in WHEELS},
    "drive_shaft": "drive_shaft_vibration",
    "coolant": "coolant_overheating",
    "firmware": "firmware_outdated",
}
assert set(FAULT_RULES) == set(FAILURE_MODES)


def car_starts(car_ids: npt.NDArray[Any]) -> Bools:
    cars = np.asarray(car_ids)
    starts = np.ones(len(cars), bool)
    if len(cars) > 1:
        starts[1:] = cars[1:] != cars[:-1]
    return starts


def rule_holds(columns: Mapping[str, npt.NDArray[Any]], starts: Bools) -> Bools:
    """Readings x FAILURE_MODES: whether each mode's rule holds on each reading (readings car
    by car, each car's in order; a rule that needs the reading before gets the car's previous
    one, none on its first)."""
    now = {name: np.asarray(columns[name]) for name in health.FIELDS}
    before = {name: np.r_[values[:1], values[:-1]] for name, values in now.items()}
    verdicts = health.judge(health.Readings(now, before, ~np.asarray(starts, bool)))
    return np.column_stack([verdicts[FAULT_RULES[m]] == health.HOLDS for m in FAILURE_MODES])


def out_of_spec(columns: Mapping[str, npt.NDArray[Any]]) -> Bools:
    """Readings x FAILURE_MODES: each mode's rule held on RAISE_K of the car's last RAISE_N
    readings (the evidence the verdict asks of a model: one bump on a worn shock absorber is
    not yet a fault). Readings car by car, each car's in order."""
    starts = car_starts(columns["car_id"])
    holds = rule_holds(columns, starts)
    return verdict.recent_count(holds, starts, verdict.RAISE_N) >= verdict.RAISE_K


def in_spec_failing(columns: Mapping[str, npt.NDArray[Any]], failing: Bools) -> Bools:
    """Readings of a failing car on which no rule holds (any order of readings: sorted by
    car and seq here): a part degrading but still in spec, neither healthy nor a fault."""
    order = np.lexsort((np.asarray(columns["seq"]), np.asarray(columns["car_id"]).astype(str)))
    ordered = {name: np.asarray(columns[name])[order] for name in (*health.FIELDS, "car_id")}
    holds = np.zeros(len(order), bool)
    holds[order] = rule_holds(ordered, car_starts(ordered["car_id"])).any(axis=1)
    return np.asarray(failing, bool) & ~holds
