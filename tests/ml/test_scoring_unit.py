"""Anomaly events from scores (pure): one per reading, keyed to it, contract-valid."""

from __future__ import annotations

import numpy as np

from fleet.avro import anomaly_codec
from ml import features as ft
from ml.registry import LoadedModel
from ml.scorer import anomaly_events


def test_events_name_the_reading_and_its_top_features() -> None:
    normalizer = ft.Normalizer(ft.FEATURES, np.zeros(len(ft.FEATURES)), np.ones(len(ft.FEATURES)))
    model = LoadedModel("m", "v1", None, normalizer, 1.0, {})
    records = [
        {"car_id": "car1", "event_time": 1000, "seq": 7},
        {"car_id": "car2", "event_time": 2000, "seq": 9},
    ]
    errors = np.zeros((2, len(ft.FEATURES)), np.float32)
    errors[0, ft.FEATURES.index("control_unit_firmware")] = 50.0
    errors[0, ft.FEATURES.index("speed")] = 2.0
    errors[1, ft.FEATURES.index("coolant_temp")] = 0.5
    scores = errors.mean(axis=1)
    scores[0] = 3.0
    events = anomaly_events(records, scores=scores, errors=errors, model=model, top=2, scored_at=5)
    assert [(e["car_id"], e["event_time"], e["seq"]) for e in events] == [
        ("car1", 1000, 7),
        ("car2", 2000, 9),
    ]
    assert [e["is_anomaly"] for e in events] == [True, False]
    assert [s["sensor"] for s in events[0]["top_sensors"]] == ["control_unit_firmware", "speed"]
    assert events[0]["top_sensors"][0]["contribution"] == 50.0
    assert events[1]["top_sensors"][0]["sensor"] == "coolant_temp"
    codec = anomaly_codec()
    for event in events:
        decoded = codec.decode(codec.encode(event))
        assert decoded["model_version"] == "v1"
        assert decoded["score"] == event["score"]
