"""Judge a model's alarms on whole fleets: simulated ones (car by car, in slices of cars so
millions of readings fit) and the seed's CSV labelled by its car model's rules.

``evaluate_fleet`` scores a fleet with a loaded model, flags readings above a threshold and
hands them to `ml.alarms` (the car verdict of ml/verdict.py, as on the twin).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.contract import FAILURE_MODES, SENSORS, WHEELS
from ml import alarms, faults, simdata
from ml import evaluate as ev
from ml import features as ft

Columns = Mapping[str, npt.NDArray[Any]]
AUC_SAMPLE = 500_000  # readings per fleet kept for the per-reading ROC-AUC


def scores_of(model: Any, columns: Columns) -> npt.NDArray[np.float64]:
    """The live scorer's score of each reading (the autoencoder's mean squared error), with
    each reading's previous coolant taken from the columns as the scorer carries it."""
    scores, _errors = model.scores(ft.transform(columns, model.normalizer))
    return np.asarray(scores, np.float64)


def evaluate_fleet(
    model: Any,
    threshold: float,
    *,
    cars: int,
    steps: int,
    seed: int,
    first_car: int,
    slice_cars: int = 500,
    **options: Any,
) -> dict[str, Any]:
    """Alarm figures of a simulated fleet (``options``: SimulationConfig's), plus the
    per-reading ROC-AUC on a sample of its readings."""
    parts, sample_scores, sample_truth = [], [], []
    interval = int(options.get("interval_ms", 10_000))
    rng = np.random.default_rng(seed)
    for i, start in enumerate(range(0, cars, slice_cars)):
        n = min(slice_cars, cars - start)
        columns = simdata.fleet_columns(
            steps, cars=n, seed=seed + i, first_car=first_car + start, **options
        )
        scores = scores_of(model, columns)
        parts.append(
            alarms.evaluate(
                car_ids=columns["car_id"],
                event_time=columns["event_time"],
                flags=scores >= threshold,
                modes=columns["modes"],
                onsets=columns["onsets"],
                interval_ms=interval,
                faults=faults.out_of_spec(columns),
            )
        )
        keep = rng.random(len(scores)) < AUC_SAMPLE / max(1, cars * steps)
        sample_scores.append(scores[keep])
        sample_truth.append(columns["failure_occurred"][keep])
    figures = alarms.merge(parts)
    figures["reading_roc_auc"] = ev.roc_auc(
        np.concatenate(sample_scores), np.concatenate(sample_truth)
    )
    return figures


def seed_csv_columns(path: Path) -> tuple[dict[str, npt.NDArray[Any]], int]:
    """The seed's CSV (``time`` in s, ``car``, 18 sensors; no labels) car by car, labelled by
    the seed car model's rules (ingest/cars/seed.py), and its reading interval in ms. A mode is
    active from the first reading that shows it (the seed's failures stay on): a tire at 20-24
    psi, an accelerometer at 3 or more, vibration 150 per m/s (moving), firmware 1000, and the
    coolant rising ~0.49 °C per ampere in a step where a healthy one rises ~0.1."""
    import pandas as pd

    frame = pd.read_csv(path).sort_values(["car", "time"], kind="stable")
    frame = frame.iloc[np.lexsort((frame["time"].to_numpy(), frame["car"].astype(str).to_numpy()))]
    columns: dict[str, npt.NDArray[Any]] = {
        "car_id": frame["car"].astype(str).to_numpy(dtype=object),
        "event_time": frame["time"].to_numpy(np.int64) * 1000,
    }
    columns["seq"] = frame.groupby("car", sort=False).cumcount().to_numpy(np.int64)
    for name in SENSORS:
        columns[name] = frame[name].to_numpy(np.float64)
    starts = alarms.car_starts(columns["car_id"])
    shows = np.zeros((len(frame), len(FAILURE_MODES)), bool)
    index = {m: j for j, m in enumerate(FAILURE_MODES)}
    for w in WHEELS:
        pressure = columns[f"tire_pressure_{w}"]
        shows[:, index[f"tire_pressure_{w}"]] = (pressure >= 20) & (pressure <= 24)
        shows[:, index[f"shock_absorber_{w}"]] = columns[f"accelerometer_{w}_value"] >= 3.0
    speed = columns["speed"]
    moving = speed > ft.MIN_SPEED
    ratio = np.where(moving, columns["engine_vibration_amplitude"] / np.where(moving, speed, 1), 0)
    shows[:, index["drive_shaft"]] = moving & (np.abs(ratio - 150.0) < 5.0)
    shows[:, index["firmware"]] = columns["control_unit_firmware"] == 1000
    rise = np.r_[np.nan, np.diff(columns["coolant_temp"])]
    rise[starts] = np.nan
    per_amp = (rise - 0.01 * speed) / np.maximum(np.abs(columns["current_draw"]), 1.0)
    shows[:, index["coolant"]] = per_amp > 0.3
    # Once shown, on for the rest of the car's readings.
    car = np.cumsum(starts) - 1
    modes = np.zeros_like(shows)
    onsets = np.full(shows.shape, -1, np.int64)
    for j in range(len(FAILURE_MODES)):
        first_show = np.full(car[-1] + 1, np.iinfo(np.int64).max)
        np.minimum.at(first_show, car[shows[:, j]], np.flatnonzero(shows[:, j]))
        active = np.arange(len(car)) >= first_show[car]
        modes[:, j] = active
        onsets[active, j] = columns["event_time"][first_show[car][active]]
    columns["modes"] = modes
    columns["onsets"] = onsets
    columns["failure_occurred"] = modes.any(axis=1)
    interval = int(np.median(np.diff(columns["event_time"])[~starts[1:]]))
    return columns, interval


def evaluate_columns(
    model: Any, threshold: float, columns: Columns, interval_ms: int
) -> dict[str, Any]:
    scores = scores_of(model, columns)
    figures = alarms.evaluate(
        car_ids=columns["car_id"],
        event_time=columns["event_time"],
        flags=scores >= threshold,
        modes=columns["modes"],
        onsets=columns["onsets"],
        interval_ms=interval_ms,
        faults=faults.out_of_spec(columns),
    )
    figures["reading_roc_auc"] = ev.roc_auc(scores, columns["failure_occurred"])
    return figures
