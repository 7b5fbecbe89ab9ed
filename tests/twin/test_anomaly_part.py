"""The twin's `anomaly` part: the newest score wins; its history is in the history collection."""

from __future__ import annotations

import copy

from tests.twin.factories import envelopes, reading, score
from twin.events import Envelope, ms_to_datetime
from twin.fold import fold


def test_the_newest_score_is_kept_with_its_threshold() -> None:
    events = envelopes([score(seq=1, value=0.2), score(seq=2, value=0.9, threshold=0.6)])
    twin = fold(None, "car1", events).twin
    assert twin is not None
    anomaly = twin["anomaly"]
    assert (anomaly["seq"], anomaly["score"], anomaly["threshold"]) == (2, 0.9, 0.6)
    assert anomaly["recent"] & 1  # this reading is above its threshold...
    assert anomaly["is_anomaly"] is False  # ...but one reading does not make the car anomalous
    assert anomaly["event_time"] == ms_to_datetime(events[1].record["event_time"])
    assert "anomaly_history" not in twin  # a twin is state, not history


def test_duplicates_late_scores_and_redeliveries_change_nothing_but_counters() -> None:
    first = envelopes([score(seq=5, value=0.3)])
    twin = fold(None, "car1", first).twin
    assert twin is not None
    frozen = copy.deepcopy(twin)
    later = envelopes([score(seq=5, value=0.3), score(seq=4, value=0.8)], start=1)
    after = fold(twin, "car1", [*first, *later]).twin  # a redelivery, a duplicate, a late score
    assert after is not None
    assert after["anomaly"] == twin["anomaly"]
    assert (after["counters"]["duplicates_skipped"], after["counters"]["late_skipped"]) == (1, 1)
    assert twin == frozen  # the caller's twin is untouched


def test_the_anomaly_part_does_not_depend_on_how_readings_interleave() -> None:
    readings = [reading(seq=s) for s in range(6)]
    scores = [score(seq=s, value=0.1 * s) for s in range(6)]
    apart = [
        *[Envelope("telemetry", 0, i, "telemetry", r) for i, r in enumerate(readings)],
        *[Envelope("anomalies", 0, i, "anomaly", s) for i, s in enumerate(scores)],
    ]
    mixed = sorted(apart, key=lambda e: (e.record["seq"], e.kind != "anomaly"))  # scores first
    one = fold(None, "car1", apart).twin
    two = fold(None, "car1", mixed).twin
    assert one is not None and two is not None
    assert one["anomaly"] == two["anomaly"]
    assert one["anomaly"]["seq"] == 5
