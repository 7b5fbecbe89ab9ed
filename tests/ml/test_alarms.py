"""Alarms judged per car on a small simulated fleet (fixed seeds, a tiny model): a failure
raises the car's alarm once it shows, and its repair clears it; the alarm figures count what
they say."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.contract import FAILURE_MODES
from ml import alarms, calibration, fleet_eval, registry, simdata, verdict
from ml import train as training

HOURS = 12
STEPS = HOURS * 360


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> registry.LoadedModel:
    columns = simdata.fleet_columns(6 * 360, cars=60, seed=1)
    keep = columns["seq"] % 6 == 0
    columns = {k: v[keep] for k, v in columns.items()}
    out = tmp_path_factory.mktemp("model")
    config = training.TrainConfig(epochs=4, supervised=False, progress=False, seed=0)
    training.train(columns, config, out)
    model = registry.load_dir(out, "tiny", "v1")
    # As on promotion: the threshold calibrated to the false-alarm budget on a live slice.
    live = simdata.fleet_columns(2 * 360, cars=200, seed=501, first_car=500_001)
    calibration.apply(model, calibration.calibrate_model(model, live, 10_000))
    return model


def test_a_repair_clears_the_alarm_its_failure_raised(model: registry.LoadedModel) -> None:
    fleet = simdata.fleet_columns(STEPS, cars=200, seed=1001, first_car=1_000_001)
    starts = alarms.car_starts(fleet["car_id"])
    flags = fleet_eval.scores_of(model, fleet) >= model.threshold
    alarm = verdict.car_alarms(flags, starts)
    # Failures begun and repaired in the run, coolant included: a repaired cooling system
    # restarts cold, and its warm-up must not hold the alarm (ml/features.py, coolant_excess).
    checked = 0
    for failure in alarms.failures(starts, fleet["modes"], fleet["onsets"]):
        if failure.first == failure.car_start:
            continue
        car_end = failure.car_start + STEPS - 1
        if failure.last + 60 > car_end:
            continue  # not repaired, or repaired too near the end to see the car calm again
        during = alarm[failure.first : failure.last + 1]
        assert during.any(), failure  # raised once the failure shows...
        # Mostly held (a drive shaft does not show while its car stands at a charger).
        assert during[verdict.CLEAR_M :].mean() > 0.5
        after = alarm[failure.last + 1 : failure.last + 60]
        assert not after[verdict.CLEAR_M :].any(), failure  # ...and cleared after its repair
        checked += 1
    assert checked >= 2


def test_alarm_figures_count_false_alarms_and_delays() -> None:
    # Two cars of 40 readings at 10 s: car a fails (firmware) from reading 10 on, car b never.
    n = 40
    car_ids = np.array(["a"] * n + ["b"] * n, dtype=object)
    event_time = np.tile(np.arange(n) * 10_000, 2)
    modes = np.zeros((2 * n, len(FAILURE_MODES)), bool)
    onsets = np.full(modes.shape, -1, np.int64)
    j = FAILURE_MODES.index("firmware")
    modes[10:n, j] = True
    onsets[10:n, j] = 95_000  # between readings 9 and 10
    flags = np.zeros(2 * n, bool)
    flags[12:n] = True  # seen from reading 12: the alarm at 14 (3 of 5)
    flags[n + 20 : n + 23] = True  # a healthy car's three flags in a row: a false alarm
    figures = alarms.evaluate(
        car_ids=car_ids,
        event_time=event_time,
        flags=flags,
        modes=modes,
        onsets=onsets,
        interval_ms=10_000,
    )
    assert (figures["alarms"], figures["false_alarms"]) == (2, 1)
    assert figures["alarm_precision"] == 0.5
    hours = 80 * 10 / 3600
    assert figures["false_alarms_per_1000_car_hours"] == pytest.approx(1000 / hours)
    firmware = figures["per_kind"]["firmware"]
    assert firmware["delays_min"] == [pytest.approx((140_000 - 95_000) / 60_000)]
    assert firmware["delays_readings"] == [4]
    assert firmware["within_5_min"] == {"detected": 1, "failures": 1, "recall": 1.0}
    # Observed for 5 minutes at most after onset: too short to judge the 60-minute budget...
    assert firmware["within_60_min"]["failures"] == 1  # ...except that it was alarmed sooner
