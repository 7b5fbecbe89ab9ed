"""The twin's bounded score history (`anomaly_history`): what the car page charts."""

from __future__ import annotations

import copy

from tests.twin.factories import envelopes, reading, score
from twin.events import Envelope, ms_to_datetime
from twin.fold import fold


def scores_of(twin: dict) -> list[tuple[int, float, float, bool]]:
    history = twin["anomaly_history"]
    return [(h["seq"], h["score"], h["threshold"], h["is_anomaly"]) for h in history]


def test_each_applied_score_is_kept_with_its_threshold_in_order() -> None:
    events = envelopes([score(seq=1, value=0.2), score(seq=2, value=0.9, threshold=0.6)])
    twin = fold(None, "car1", events).twin
    assert twin is not None
    assert scores_of(twin) == [(1, 0.2, 0.5, False), (2, 0.9, 0.6, True)]
    assert twin["anomaly_history"][1]["event_time"] == twin["anomaly"]["event_time"]
    first = ms_to_datetime(events[0].record["event_time"])
    assert twin["anomaly_history"][0]["event_time"] == first


def test_duplicates_late_scores_and_redeliveries_add_nothing() -> None:
    first = envelopes([score(seq=5, value=0.3)])
    twin = fold(None, "car1", first).twin
    assert twin is not None
    frozen = copy.deepcopy(twin)
    later = envelopes([score(seq=5, value=0.3), score(seq=4, value=0.8)], start=1)
    after = fold(twin, "car1", [*first, *later]).twin  # a redelivery, a duplicate, a late score
    assert after is not None
    assert scores_of(after) == [(5, 0.3, 0.5, False)]
    assert twin == frozen  # the caller's twin is untouched


def test_the_history_is_bounded_and_independent_of_readings_interleaving() -> None:
    readings = [reading(seq=s) for s in range(6)]
    scores = [score(seq=s, value=0.1 * s) for s in range(6)]
    apart = [
        *[Envelope("telemetry", 0, i, "telemetry", r) for i, r in enumerate(readings)],
        *[Envelope("anomalies", 0, i, "anomaly", s) for i, s in enumerate(scores)],
    ]
    mixed = sorted(apart, key=lambda e: (e.record["seq"], e.kind != "anomaly"))  # scores first
    one = fold(None, "car1", apart, history_size=4).twin
    two = fold(None, "car1", mixed, history_size=4).twin
    assert one is not None and two is not None
    assert [h["seq"] for h in one["anomaly_history"]] == [2, 3, 4, 5]
    assert one["anomaly_history"] == two["anomaly_history"]
