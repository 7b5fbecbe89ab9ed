"""Calibration on promotion, the pure parts: the live slice it reads, and the card it writes."""

from __future__ import annotations

import numpy as np

from ml import calibration
from ml.alarms import car_starts


def test_recent_readings_car_by_car_and_the_interval() -> None:
    # Two cars, readings every 10 s for an hour, arriving interleaved (as Kafka has them).
    n = 360
    times = np.repeat(np.arange(n) * 10_000, 2)
    columns = {
        "car_id": np.tile(np.array(["b", "a"], dtype=object), n),
        "seq": np.repeat(np.arange(n), 2),
        "event_time": times,
        "speed": np.arange(2 * n, dtype=float),
    }
    recent, interval = calibration.recent_by_car(columns, hours=0.5)
    assert interval == 10_000
    assert recent["car_id"].tolist() == ["a"] * 181 + ["b"] * 181  # the last half hour
    assert car_starts(recent["car_id"]).sum() == 2
    for car in ("a", "b"):
        seq = recent["seq"][recent["car_id"] == car]
        assert (np.diff(seq) == 1).all() and seq[-1] == n - 1


def test_apply_records_the_calibration_on_the_card() -> None:
    from types import SimpleNamespace

    model = SimpleNamespace(
        threshold=0.6,
        card={"threshold": 0.6, "decision": {"model": "combined", "autoencoder_scale": 1.0}},
    )
    calibration.apply(
        model,
        {"threshold": 1.3, "decision": {"model": "combined", "autoencoder_scale": 0.8}, "x": 1},
    )
    assert model.threshold == 1.3 and model.card["threshold"] == 1.3
    assert model.card["threshold_before_calibration"] == 0.6
    assert model.card["decision"]["autoencoder_scale"] == 0.8
    assert model.card["calibration_of_threshold"] == {"threshold": 1.3, "x": 1}
    assert model.card["threshold_method"] == "false-alarm budget"


def test_failing_cars_in_the_slice_do_not_lift_the_threshold() -> None:
    # 300 healthy cars of 1,000 readings (log-normal scores), and 15 whose failure began in
    # their last 6% of readings with scores a thousand times higher: their medians look
    # healthy and they are above the 99th percentile on less than a tenth of their readings.
    rng = np.random.default_rng(7)
    cars, n = 315, 1000
    scores = rng.lognormal(np.log(0.1), 0.4, (cars, n))
    scores[300:, -60:] = rng.uniform(50.0, 100.0, (15, 60))
    car_ids = np.repeat([f"car{i:03d}" for i in range(cars)], n)
    result = calibration.calibrate(scores.reshape(-1), car_ids, 10_000)
    assert result["cars_set_aside"] >= 15
    # The healthy cars raise no more alarms than the budget, and the threshold sits within a
    # few times their highest sustained score, not near the failing cars' 50-100.
    healthy, starts = scores[:300].reshape(-1), car_starts(car_ids[: 300 * n])
    hours = 300 * n * 10 / 3600
    threshold = result["threshold"]
    assert calibration.alarm_rate(healthy, starts, threshold, hours) <= 0.5
    assert threshold < 3 * calibration.kth_of_last(healthy, starts).max()
