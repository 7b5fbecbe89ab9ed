"""The feature pipeline and the evaluation metrics: pure functions, no servers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleet.contract import FAILURE_MODES, SENSORS, WHEELS
from ingest.simulator import FleetSimulator, SimulationConfig
from ml import evaluate as ev
from ml import features as ft


def simulated(cars: int = 200, steps: int = 30, seed: int = 5, rate: float = 1.0) -> dict:
    """The seed profile: its exact failure signatures (vibration x150 from the first reading)
    and, with ``rate``, as many failing readings as a test wants."""
    config = SimulationConfig(cars=cars, seed=seed, profile="seed", failure_rate=rate)
    records = [r for b in FleetSimulator(config).run(steps) for r in b.records()]
    return ft.columns_from_records(records)


def test_every_sensor_is_a_feature_and_derived_ones_follow() -> None:
    assert ft.FEATURES[: len(SENSORS)] == SENSORS
    assert len(ft.FEATURES) == len(SENSORS) + len(ft.DERIVED)
    raw = ft.raw_features(simulated(cars=20, steps=3))
    assert raw.shape == (60, len(ft.FEATURES))
    assert raw.dtype == np.float32


def test_vibration_ratio_separates_a_degraded_drive_shaft() -> None:
    cols = simulated(cars=500, steps=40, rate=2.0)
    raw = ft.raw_features(cols)
    ratio = raw[:, ft.FEATURES.index("vibration_per_speed")]
    modes = ft.mode_matrix(cols)
    shaft = modes[:, FAILURE_MODES.index("drive_shaft")]
    moving = cols["speed"] > ft.MIN_SPEED
    np.testing.assert_allclose(ratio[shaft & moving], 150.0, rtol=1e-4)
    np.testing.assert_allclose(ratio[~shaft & moving], 100.0, rtol=1e-4)
    assert np.all(ratio[~moving] == 100.0)


def test_same_features_from_records_and_from_a_dataframe() -> None:
    cols = simulated(cars=30, steps=4)
    names = ["car_id", "seq", *SENSORS]
    frame = pd.DataFrame({name: cols[name] for name in names})
    np.testing.assert_array_equal(ft.raw_features(cols), ft.raw_features(frame))
    dict_of_numpy = {name: np.asarray(cols[name]) for name in names}
    np.testing.assert_array_equal(ft.raw_features(cols), ft.raw_features(dict_of_numpy))


def test_fleet_features_hold_on_warm_ups_and_show_gradual_failures() -> None:
    """On the realistic fleet: the coolant's excess over a healthy equilibrium stays low for
    healthy cars, warm-ups included (a repaired cooling system restarts cold), and climbs for a
    failing one; a leaking tire drops below the car's other tires."""
    from ml import simdata

    cols = simdata.fleet_columns(360 * 3, cars=200, seed=7, failing_share=0.3)
    raw = ft.raw_features(cols)
    healthy = ~cols["failure_occurred"]
    excess = raw[:, ft.FEATURES.index("coolant_excess")]
    assert excess[healthy].max() < 6.0
    assert excess[healthy].min() == ft.COLD  # warm-ups: below (floored), not above
    coolant = FAILURE_MODES.index("coolant")
    age_min = (cols["event_time"] - cols["onsets"][:, coolant]) / 60_000
    late = cols["modes"][:, coolant] & (age_min > 60)
    assert np.median(excess[late]) > 50.0
    spreads = raw[:, [ft.FEATURES.index(f"tire_spread_{w}") for w in WHEELS]]
    assert np.abs(spreads[healthy]).max() <= 4.0
    tires = [FAILURE_MODES.index(f"tire_pressure_{w}") for w in WHEELS]
    leaking = cols["modes"][:, tires]
    assert (spreads[leaking] <= -5).mean() > 0.4  # a developed leak, under way on many readings


def test_context_sensors_reach_the_models_only_through_the_engineered_columns() -> None:
    cols = simulated(cars=50, steps=10, rate=0.0)
    raw = ft.raw_features(cols)
    norm = ft.Normalizer.fit(raw)
    shifted = raw.copy()
    for name in ft.CONTEXT:
        shifted[:, ft.FEATURES.index(name)] += 1000.0  # a hotter climate, a flat battery...
    context = [ft.FEATURES.index(n) for n in ft.CONTEXT]
    assert (norm.apply(shifted)[:, context] == 0).all()
    others = [i for i in range(len(ft.FEATURES)) if i not in context]
    np.testing.assert_array_equal(norm.apply(shifted)[:, others], norm.apply(raw)[:, others])


def test_normalizer_learns_on_training_data_round_trips_and_clips() -> None:
    cols = simulated(cars=300, steps=10, rate=0.0)
    raw = ft.raw_features(cols)
    norm = ft.Normalizer.fit(raw)
    z = norm.apply(raw)
    varying = norm.scale != 1.0
    # Centred before clipping (clipping a long tail at ±CLIP moves the mean a little).
    unclipped = (raw.astype(np.float64) - norm.mean) / norm.scale
    np.testing.assert_allclose(unclipped[:, varying].mean(axis=0), 0.0, atol=1e-3)
    assert np.abs(z).max() <= ft.CLIP
    # Healthy fleet: firmware is constant, kept at unit scale; an outdated one is clipped.
    firmware = ft.FEATURES.index("control_unit_firmware")
    assert norm.scale[firmware] == 1.0
    outdated = raw[:1].copy()
    outdated[0, firmware] = 1000
    assert norm.apply(outdated)[0, firmware] == -ft.CLIP
    again = ft.Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.apply(raw), z)
    with pytest.raises(ValueError, match="features"):
        ft.Normalizer.from_dict(norm.to_dict() | {"features": ["speed"]})
    with pytest.raises(ValueError, match="zero readings"):
        ft.Normalizer.fit(raw[:0])


def test_labels_and_mode_matrix_follow_the_records() -> None:
    cols = simulated(cars=100, steps=30, rate=2.0)
    assert ft.has_labels(cols)
    y = ft.labels(cols)
    modes = ft.mode_matrix(cols)
    np.testing.assert_array_equal(modes.any(axis=1), y)
    unlabelled = ft.columns_from_records([{**r, "failure_occurred": None} for r in [_record()]])
    assert not ft.has_labels(unlabelled)


def _record() -> dict:
    batch = next(FleetSimulator(SimulationConfig(cars=1)).run(1))
    return next(batch.records())


def test_windows_stay_within_one_car_oldest_first() -> None:
    cars = np.array(["b", "a", "b", "a", "b", "a"], dtype=object)
    seq = np.array([0, 0, 1, 1, 2, 2])
    order = ft.car_order({"car_id": cars, "seq": seq})
    idx = ft.window_indices(cars, order, 3)
    # a: rows 1,3,5; b: rows 0,2,4
    assert idx.tolist() == [[1, 1, 1], [1, 1, 3], [1, 3, 5], [0, 0, 0], [0, 0, 2], [0, 2, 4]]
    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    w = ft.windows(features, cars, order, 3)
    assert w.shape == (6, 3, 4)
    np.testing.assert_array_equal(w[2, :, :2], features[[1, 3, 5]])
    np.testing.assert_array_equal(w[2, 1:, 2:], features[[3, 5]] - features[[1, 3]])


def test_roc_auc_matches_definition() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=400)
    truth = rng.random(400) < 0.3
    pos, neg = scores[truth], scores[~truth]
    expected = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert ev.roc_auc(scores, truth) == pytest.approx(expected)
    assert ev.roc_auc(truth.astype(float), truth) == 1.0
    assert ev.roc_auc(np.zeros(10), np.r_[np.ones(5, bool), np.zeros(5, bool)]) == 0.5


def test_classification_and_thresholds() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.4])
    truth = np.array([False, False, False, True, True, True])
    c = ev.classification(scores, truth, 0.35)
    assert c == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "false_alarm_rate": 0.0}
    assert 0.3 < ev.best_f1_threshold(scores, truth) <= 0.4
    healthy = np.arange(1000, dtype=float)
    assert ev.threshold_at_false_alarm_rate(healthy, 0.01) == pytest.approx(989.01)


def test_detection_delay_counts_readings_from_onset_to_first_verdict() -> None:
    cars = np.array(["a"] * 6 + ["b"] * 4, dtype=object)
    seq = np.r_[np.arange(6), np.arange(4)]
    modes = np.zeros((10, len(FAILURE_MODES)), bool)
    shaft = FAILURE_MODES.index("drive_shaft")
    coolant = FAILURE_MODES.index("coolant")
    modes[2:6, shaft] = True  # a: onset at seq 2
    modes[7:10, coolant] = True  # b: onset at seq 1, never detected
    verdict = np.zeros(10, bool)
    verdict[4] = True  # a detected at seq 4 -> delay 2
    verdict[0] = True  # a false alarm before the onset does not count
    result = ev.detection_delays(cars, seq, modes, verdict)
    assert result["per_mode"]["drive_shaft"] == {"median": 2.0, "onsets": 1, "missed": 0}
    assert result["per_mode"]["coolant"]["missed"] == 1
    assert result["median"] == 2.0
    assert result["onsets"] == 2


def test_recall_per_mode_only_counts_readings_with_that_mode_alone() -> None:
    modes = np.zeros((4, len(FAILURE_MODES)), bool)
    modes[0, 0] = modes[1, 0] = True
    modes[1, 1] = True  # reading 1 has two modes: not credited to either
    verdict = np.array([True, True, False, False])
    out = ev.recall_per_mode(verdict, modes)
    assert out[FAILURE_MODES[0]] == {"readings": 1, "recall": 1.0}
    assert out[FAILURE_MODES[1]]["readings"] == 0


def test_window_channel_shows_coolant_heating_per_ampere() -> None:
    cars = np.array(["a"] * 3, dtype=object)
    seq = np.arange(3)
    raw = np.zeros((3, len(ft.FEATURES)), np.float32)
    coolant, current = ft.FEATURES.index("coolant_temp"), ft.FEATURES.index("current_draw")
    raw[:, coolant] = [80.0, 85.0, 100.0]
    raw[:, current] = [10.0, 10.0, 10.0]
    order = ft.car_order({"car_id": cars, "seq": seq})
    w = ft.windows(raw, cars, order, 3, raw)
    assert w.shape == (3, 3, 2 * len(ft.FEATURES) + 1)
    np.testing.assert_allclose(w[2, :, -1], [0.0, 0.5, 1.5])
