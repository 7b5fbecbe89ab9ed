"""Alarms judged as a fleet engineer would (pure numpy): per car, not per reading.

Input: a fleet's readings car by car (each car's in order), each reading's flag (score above
the threshold), and the ground truth as ``modes`` (readings x FAILURE_MODES, which modes are
active) and ``onsets`` (the same shape: each active mode's onset time, ms). The car's verdict
is ml/verdict.py's rule, as on the twin. Figures:

* **alarms**: readings where a car turns anomalous. A *false alarm* is one raised while the car
  has no active failure; *alarm precision* is the share of alarms raised during a failure.
  False alarms are counted per 1,000 car-hours of driving observed.
* **detection**: a *failure* is one mode's run of readings on one car, from its *onset* (the
  degradation's start: the simulator's ground truth; for a labelled CSV the first reading that
  shows it) to its repair. A gradual failure reads healthy for a while (a tire leaking over
  hours has lost 0.3 psi after five minutes); it becomes a *fault* when its part is out of
  spec by the car model's own rule (twin/health.py, the twin's health conditions: a tire below
  27 psi, an accelerometer at 3 m/s² or more, coolant heating over 0.03 °C per ampere-second or
  at 130 °C, ...) on ``RAISE_K`` of the car's last ``RAISE_N`` readings, the evidence the
  verdict asks of a model (a single bump on a worn shock absorber is not yet a fault). The
  *fault onset* is that reading's time (an instant failure's is its first reading that shows
  it, once three have). The *delay* runs from the fault onset to the first reading during the
  failure with the car in alarm (negative: alarmed while the part was still degrading), and
  from the onset as a secondary figure. *Recall within B*: the share of faults alarmed by B
  after their fault onset, among those whose fault onset was observed (not in the car's first
  readings) and that were observed for at least B after it (or alarmed sooner); failures
  repaired before they became faults count for precision (an alarm during a degradation is
  not false) and in "alarmed before repair", not in recall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.contract import FAILURE_MODES
from ingest.cars.common import mode_kind
from ml import verdict
from ml.faults import car_starts

Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]
MINUTE_MS = 60_000
BUDGETS_MIN = (5, 60)  # recall within these many minutes of the fault onset
DELAY_LISTS = ("delays_min", "delays_readings", "onset_delays_min")


@dataclass
class Failure:
    car_start: int  # index of the car's first reading
    mode: str
    onset_ms: int
    first: int  # index of its first reading
    last: int  # index of its last reading


def failures(starts: Bools, modes: Bools, onsets: Ints) -> list[Failure]:
    """Each mode's runs of active readings per car (a car's first reading starts a new run)."""
    out: list[Failure] = []
    first_of_car = np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))
    for j, mode in enumerate(FAILURE_MODES):
        active = modes[:, j]
        if not active.any():
            continue
        begins = active & (np.r_[True, ~active[:-1]] | starts)
        ends = active & (np.r_[~active[1:], True] | np.r_[starts[1:], True])
        for first, last in zip(np.flatnonzero(begins), np.flatnonzero(ends), strict=True):
            out.append(
                Failure(
                    int(first_of_car[first]), mode, int(onsets[first, j]), int(first), int(last)
                )
            )
    return out


def evaluate(
    *,
    car_ids: npt.NDArray[Any],
    event_time: Ints,
    flags: Bools,
    modes: Bools,
    onsets: Ints,
    interval_ms: int,
    faults: Bools | None = None,
    budgets_min: tuple[int, ...] = BUDGETS_MIN,
) -> dict[str, Any]:
    """Every alarm figure of one fleet (readings car by car, each car's in order). ``faults``:
    `ml.faults.out_of_spec` of the readings; without it a failure is a fault from its onset."""
    starts = car_starts(car_ids)
    event_time = np.asarray(event_time, np.int64)
    alarm = verdict.car_alarms(flags, starts)
    raised = verdict.alarm_onsets(alarm, starts)
    failing = modes.any(axis=1)
    car_hours = len(flags) * interval_ms / 3_600_000
    n_alarms = int(raised.sum())
    n_false = int((raised & ~failing).sum())
    kinds = sorted({mode_kind(m) for m in FAILURE_MODES})
    per_kind: dict[str, dict[str, Any]] = {
        k: {
            "failures": 0,
            "onset_seen": 0,
            "faults": 0,
            "fault_seen": 0,
            "detected": 0,
            "delays_min": [],
            "delays_readings": [],
            "onset_delays_min": [],
        }
        | {f"within_{b}_min": {"detected": 0, "failures": 0} for b in budgets_min}
        for k in kinds
    }
    column = {m: j for j, m in enumerate(FAILURE_MODES)}
    for f in failures(starts, modes, onsets):
        row = per_kind[mode_kind(f.mode)]
        row["failures"] += 1
        hits = np.flatnonzero(alarm[f.first : f.last + 1])
        alarmed = int(event_time[f.first + hits[0]]) if len(hits) else None
        row["detected"] += alarmed is not None
        if f.first > f.car_start and f.onset_ms > event_time[f.first - 1]:
            row["onset_seen"] += 1
            if alarmed is not None:
                row["onset_delays_min"].append((alarmed - f.onset_ms) / MINUTE_MS)
        if faults is None:
            fault = f.first if f.first > f.car_start else None
            fault_ms = f.onset_ms
        else:
            out = np.flatnonzero(faults[f.first : f.last + 1, column[f.mode]])
            if not len(out):
                continue  # repaired (or the data ended) before its part was out of spec
            fault = f.first + int(out[0])
            fault_ms = int(event_time[fault])
        row["faults"] += 1
        # Out of spec within the car's first readings: the fault may be older than the data.
        if fault is None or fault < f.car_start + verdict.RAISE_N:
            continue
        row["fault_seen"] += 1
        delay = alarmed - fault_ms if alarmed is not None else None
        if delay is not None:
            row["delays_min"].append(delay / MINUTE_MS)
            row["delays_readings"].append(f.first + int(hits[0]) - fault)
        observed = int(event_time[f.last] - fault_ms)
        for b in budgets_min:
            budget = b * MINUTE_MS
            hit = delay is not None and delay <= budget
            if hit or observed >= budget:
                row[f"within_{b}_min"]["failures"] += 1
                row[f"within_{b}_min"]["detected"] += int(hit)
    modes_out = {kind: _stats(row) for kind, row in per_kind.items()}
    return {
        "readings": len(flags),
        "cars": int(starts.sum()),
        "car_hours": car_hours,
        "failing_share": float(failing.mean()) if len(failing) else 0.0,
        "reading_flag_rate_healthy": float(flags[~failing].mean()) if (~failing).any() else 0.0,
        "alarms": n_alarms,
        "false_alarms": n_false,
        "false_alarms_per_1000_car_hours": n_false / car_hours * 1000 if car_hours else 0.0,
        "alarm_precision": (n_alarms - n_false) / n_alarms if n_alarms else float("nan"),
        "cars_in_alarm_share": float(alarm.mean()) if len(alarm) else 0.0,
        "per_kind": modes_out,
    }


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of several slices of one fleet (other cars each) as one."""
    if len(parts) == 1:
        return parts[0]
    total: dict[str, Any] = {}
    for key in ("readings", "cars", "car_hours", "alarms", "false_alarms"):
        total[key] = sum(p[key] for p in parts)
    weights = np.array([p["readings"] for p in parts], float)
    for key in ("failing_share", "reading_flag_rate_healthy", "cars_in_alarm_share"):
        total[key] = float(np.average([p[key] for p in parts], weights=weights))
    total["false_alarms_per_1000_car_hours"] = total["false_alarms"] / total["car_hours"] * 1000
    total["alarm_precision"] = (
        (total["alarms"] - total["false_alarms"]) / total["alarms"]
        if total["alarms"]
        else float("nan")
    )
    total["per_kind"] = {}
    for kind in parts[0]["per_kind"]:
        rows = [p["per_kind"][kind] for p in parts]
        merged: dict[str, Any] = {
            key: sum(r[key] for r in rows)
            for key in ("failures", "onset_seen", "faults", "fault_seen", "detected")
        }
        for key in DELAY_LISTS:
            merged[key] = [d for r in rows for d in r[key]]
        for key in rows[0]:
            if key.startswith("within_"):
                merged[key] = {k: sum(r[key][k] for r in rows) for k in ("detected", "failures")}
        total["per_kind"][kind] = _stats(merged)
    return total


def _stats(row: dict[str, Any]) -> dict[str, Any]:
    """A failure kind's counts and delays -> its figures (recall, median and p90 delay)."""
    out = dict(row)
    delays = np.asarray(row["delays_min"], float)
    readings = np.asarray(row["delays_readings"], float)
    from_onset = np.asarray(row["onset_delays_min"], float)
    for key, value in row.items():
        if key.startswith("within_"):
            hit, eligible = value["detected"], value["failures"]
            out[key] = {
                "detected": hit,
                "failures": eligible,
                "recall": hit / eligible if eligible else float("nan"),
            }
    out["detected_share"] = row["detected"] / row["failures"] if row["failures"] else float("nan")
    out["median_delay_min"] = float(np.median(delays)) if len(delays) else float("nan")
    out["p90_delay_min"] = float(np.quantile(delays, 0.9)) if len(delays) else float("nan")
    out["median_delay_readings"] = float(np.median(readings)) if len(readings) else float("nan")
    out["median_onset_delay_min"] = (
        float(np.median(from_onset)) if len(from_onset) else float("nan")
    )
    return out


def goals(figures: dict[str, Any], budget_min: int = 5) -> dict[str, Any]:
    """The fleet engineer's goals: <= 1 false alarm per 1,000 car-hours, alarm precision >=
    0.9, every failure kind alarmed within the budget in >= 95% of cases."""
    recalls = {k: v[f"within_{budget_min}_min"]["recall"] for k, v in figures["per_kind"].items()}
    measured = {k: r for k, r in recalls.items() if not np.isnan(r)}
    return {
        "false_alarms": figures["false_alarms_per_1000_car_hours"] <= 1.0,
        "precision": figures["alarm_precision"] >= 0.9,
        "recall": bool(measured) and all(r >= 0.95 for r in measured.values()),
        "weakest": min(measured, key=lambda k: measured[k]) if measured else None,
    }
