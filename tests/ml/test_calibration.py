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
