"""The fleet engineer's goals on (a), the default fleet the model never saw (fixed seeds):
at most one false alarm per 1,000 car-hours, alarm precision >= 0.9, and every failure kind
alarmed within 5 minutes of its fault onset in >= 95% of cases. The model is trained, and its
threshold calibrated, as bench/ml_evaluate.py does, on fewer cars (about 1.5 minutes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fleet.contract import FAILURE_MODES
from ml import alarms, calibration, faults, fleet_eval, registry, simdata
from ml import train as training

pytestmark = pytest.mark.slow

HOUR = 360  # readings per car-hour at one every 10 s


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    columns = simdata.fleet_columns(24 * HOUR, cars=300, seed=1)
    keep = columns["seq"] % 6 == 0
    columns = {k: v[keep] for k, v in columns.items()}
    out = tmp_path_factory.mktemp("model")
    config = training.TrainConfig(epochs=15, supervised_epochs=8, progress=False, seed=0)
    training.train(columns, config, out)
    model = registry.load_dir(out, "goals", "v1")
    # As on promotion: calibrated on a recent unlabelled slice of other cars of the fleet.
    live = simdata.fleet_columns(3 * HOUR, cars=1000, seed=501, first_car=500_001)
    calibration.apply(model, calibration.calibrate_model(model, live, 10_000))
    return fleet_eval.evaluate_fleet(
        model,
        model.threshold,
        cars=1000,
        steps=12 * HOUR,
        seed=1001,
        first_car=1_000_001,
        slice_cars=250,
    )


def test_false_alarms_stay_within_the_budget(figures: dict[str, Any]) -> None:
    assert figures["car_hours"] == 12_000
    assert figures["false_alarms_per_1000_car_hours"] <= 1.0, figures["false_alarms"]
    assert figures["alarms"] >= 50  # alarms were raised: the budget is not met by silence
    assert figures["alarm_precision"] >= 0.9


def test_every_failure_kind_is_alarmed_within_five_minutes_of_its_fault(
    figures: dict[str, Any],
) -> None:
    for kind, row in figures["per_kind"].items():
        within = row["within_5_min"]
        assert within["failures"] >= 3, (kind, within)  # measured, not vacuous
        assert within["recall"] >= 0.95, (kind, within)


def test_a_fault_begins_when_the_part_leaves_its_spec() -> None:
    # One car, a tire leaking from 32 psi by 1 psi a reading from reading 5 on: below the
    # health rule's 27 psi from reading 10 (26 psi), out of spec on 3 of 5 readings from 12.
    n = 20
    columns: dict[str, Any] = {name: np.zeros(n) for name in faults.health.FIELDS}
    columns |= {
        "car_id": np.array(["a"] * n, dtype=object),
        "seq": np.arange(n),
        "event_time": np.arange(n) * 10_000,
        "control_unit_firmware": np.full(n, 2000),
        "coolant_temp": np.full(n, 90.0),
    }
    for wheel in ("1_1", "1_2", "2_1", "2_2"):
        columns[f"tire_pressure_{wheel}"] = np.full(n, 32.0)
    columns["tire_pressure_2_1"] = 32.0 - np.clip(np.arange(n) - 4, 0, None)
    spec = faults.out_of_spec(columns)
    tire = spec[:, FAILURE_MODES.index("tire_pressure_2_1")]
    assert list(np.flatnonzero(tire)) == list(range(12, n))
    assert not np.delete(spec, FAILURE_MODES.index("tire_pressure_2_1"), axis=1).any()
    # Degradation from reading 5, alarm raised at reading 11: 10 s before the fault onset.
    modes = np.zeros((n, len(FAILURE_MODES)), bool)
    onsets = np.full(modes.shape, -1, np.int64)
    modes[5:, FAILURE_MODES.index("tire_pressure_2_1")] = True
    onsets[5:, FAILURE_MODES.index("tire_pressure_2_1")] = 45_000
    flags = np.arange(n) >= 9
    result = alarms.evaluate(
        car_ids=columns["car_id"],
        event_time=columns["event_time"],
        flags=flags,
        modes=modes,
        onsets=onsets,
        interval_ms=10_000,
        faults=spec,
    )
    tires = result["per_kind"]["tire_pressure"]
    assert tires["delays_min"] == [pytest.approx(-10 / 60)]
    assert tires["delays_readings"] == [-1]
    assert tires["onset_delays_min"] == [pytest.approx((110_000 - 45_000) / 60_000)]
    assert tires["within_5_min"]["recall"] == 1.0
