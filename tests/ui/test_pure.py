"""The explorer's pure parts: query building and presentation (no servers)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from fleet.contract import SENSORS
from tests.ui.fleetdata import simulated_history, simulated_twins
from twin.health import CONDITION_NAMES
from ui import present, streams
from ui.twin_reads import (
    ANY_CONDITION,
    TableQuery,
    count_terms,
    cursor_of,
    merge,
    page_queries,
    prefix_range,
    table_filter,
    table_rows,
)

CLOCK = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_no_filter_is_an_empty_query() -> None:
    assert table_filter(TableQuery(), CLOCK) == {}


def flat(where: dict) -> bool:
    """No top-level operator: a server can route the whole filter through one index."""
    return not any(k.startswith("$") for k in where)


def test_filters_are_one_flat_document_of_indexed_fields() -> None:
    query = TableQuery(
        search="car1.",
        condition="tire_pressure_low",
        anomaly="anomalous",
        firmware=1000,
        seen_within=timedelta(minutes=5),
    )
    where = table_filter(query, CLOCK)
    assert where == {
        "health.conditions.name": "tire_pressure_low",
        "anomaly.is_anomaly": True,
        "reported.control_unit_firmware.value": 1000,
        "car_id": {"$gte": "car1.", "$lt": "car1/"},  # the prefix as a range on the id's copy
        "last_seen": {"$gte": CLOCK - timedelta(minutes=5)},
    }
    calm = table_filter(TableQuery(anomaly="not anomalous", condition=ANY_CONDITION), CLOCK)
    assert calm == {
        "health.conditions.name": {"$in": list(CONDITION_NAMES)},
        "anomaly.is_anomaly": {"$in": [False, None]},  # equality, not $ne
    }


def test_prefix_ranges() -> None:
    assert prefix_range("car1") == {"$gte": "car1", "$lt": "car2"}
    assert prefix_range("z\U0010ffff") == {"$gte": "z\U0010ffff", "$lt": "{"}


def test_merge_joins_ranges_and_falls_back_to_and_on_a_clash() -> None:
    assert merge({"_id": {"$gte": "a"}}, {"_id": {"$gt": "b"}}) == {
        "_id": {"$gte": "a", "$gt": "b"}
    }
    assert merge({"last_seen": None}, {"last_seen": {"$lt": 1}}) == {
        "$and": [{"last_seen": None}, {"last_seen": {"$lt": 1}}]
    }


def test_silent_for_is_a_range_and_needs_a_clock() -> None:
    where = table_filter(TableQuery(silent_for=timedelta(hours=1)), CLOCK)
    assert where == {"last_seen": {"$lt": CLOCK - timedelta(hours=1)}}
    assert table_filter(TableQuery(silent_for=timedelta(hours=1)), None) == {}


def test_counts_count_the_small_side() -> None:
    since = CLOCK - timedelta(minutes=5)
    terms = count_terms(
        TableQuery(anomaly="not anomalous", seen_within=timedelta(minutes=5)), CLOCK
    )
    assert terms == [
        (1, {}),  # all twins (the collection's own count)
        (-1, {"last_seen": {"$lt": since}}),
        (-1, {"last_seen": None}),
        (-1, {"anomaly.is_anomaly": True}),
        (1, {"anomaly.is_anomaly": True, "last_seen": {"$lt": since}}),
        (1, {"anomaly.is_anomaly": True, "last_seen": None}),
    ]
    assert count_terms(TableQuery(firmware=1000), CLOCK) == [
        (1, {"reported.control_unit_firmware.value": 1000})
    ]


def test_unknown_condition_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown condition"):
        table_filter(TableQuery(condition="flat_battery"), CLOCK)


def test_keyset_pages_by_car_id() -> None:
    first = page_queries(TableQuery(firmware=1000), CLOCK)
    assert first == [({"reported.control_unit_firmware.value": 1000}, [("_id", 1)])]
    after = page_queries(TableQuery(firmware=1000, search="car", after=(None, "car77")), CLOCK)
    assert after == [
        (
            {
                "reported.control_unit_firmware.value": 1000,
                "car_id": {"$gte": "car", "$lt": "cas"},
                "_id": {"$gt": "car77"},
            },
            [("_id", 1)],
        )
    ]
    back = page_queries(TableQuery(firmware=1000, reverse=True, after=(None, "car77")), CLOCK)
    assert back == [
        ({"reported.control_unit_firmware.value": 1000, "_id": {"$lt": "car77"}}, [("_id", -1)])
    ]
    # Without a narrowing filter: id windows (tests/ui/test_id_windows.py).


def test_keyset_pages_by_score_continue_past_ties_then_below_then_nulls() -> None:
    by_score = [("anomaly.score", -1), ("_id", 1)]
    by_id = [("_id", 1)]
    query = TableQuery(sort="anomaly score (highest first)", anomaly="anomalous")
    assert page_queries(query, CLOCK) == [
        ({"anomaly.is_anomaly": True, "anomaly.score": {"$gte": float("-inf")}}, by_score),
        ({"anomaly.is_anomaly": True, "anomaly.score": None}, by_id),
    ]
    after = page_queries(dataclasses.replace(query, after=(0.9, "car7")), CLOCK)
    assert after == [
        ({"anomaly.is_anomaly": True, "anomaly.score": 0.9, "_id": {"$gt": "car7"}}, by_id),
        ({"anomaly.is_anomaly": True, "anomaly.score": {"$lt": 0.9}}, by_score),
        ({"anomaly.is_anomaly": True, "anomaly.score": None}, by_id),
    ]
    assert all(flat(where) for where, _ in after)
    # Ascending, nulls come first; past a null, the rest of the nulls then every value.
    up = dataclasses.replace(query, reverse=True, after=(None, "car7"))
    assert page_queries(up, CLOCK)[1][0] == {
        "anomaly.is_anomaly": True,
        "anomaly.score": {"$gte": float("-inf")},
    }


def test_cursor_of_a_row() -> None:
    doc = {"_id": "car5", "anomaly": {"score": 0.7}}
    assert cursor_of(doc, TableQuery(sort="anomaly score (highest first)")) == (0.7, "car5")
    assert cursor_of(
        {"_id": "car6", "anomaly": None}, TableQuery(sort="anomaly score (highest first)")
    ) == (None, "car6")
    assert cursor_of(doc, TableQuery()) == ("car5", "car5")


def test_history_frames_keep_each_reading_and_each_score_with_its_threshold() -> None:
    history = simulated_history(cars=3, steps=4, failure_rate=20.0, scored=2, scores_per_car=3)
    frame = present.score_frame(history["car1"])
    scores = [d for d in history["car1"] if d["kind"] == "score"]
    assert list(frame["seq"]) == [1, 2, 3] == [h["seq"] for h in scores]
    assert list(frame["score"]) == [h["score"] for h in scores]
    assert list(frame["threshold"]) == [0.5, 0.5, 0.5]
    assert present.score_frame(history["car3"]).empty  # never scored
    readings = present.history_frame(history["car1"])
    assert list(readings["seq"]) == [0, 1, 2, 3]
    assert list(readings.columns) == ["event_time", "seq", *SENSORS]
    assert present.history_frame([]).empty


def test_rows_and_presentation_of_simulated_twins() -> None:
    twins = simulated_twins(cars=5, steps=4, failure_rate=20.0, scored=3)
    rows = table_rows(twins)
    assert [r["car"] for r in rows] == [f"car{i}" for i in range(1, 6)]
    assert rows[4]["score"] is None and rows[0]["score"] is not None
    twin = twins[0]
    reported = present.reported_rows(twin)
    assert len(reported) == 18
    assert {r["unit"] for r in reported if r["sensor"].startswith("tire_pressure")} == {"psi"}
    conditions = present.condition_rows(twin, twin["last_seen"])
    assert len(conditions) == len(twin["health"]["conditions"]) > 0
    safe = present.json_safe(twin)
    assert isinstance(safe["last_seen"], str) and safe["last_seen"].endswith("+00:00")


def test_onset_series_is_cumulative() -> None:
    onsets = [CLOCK, CLOCK + timedelta(minutes=1), CLOCK + timedelta(minutes=1, seconds=5)]
    series = present.onset_series(onsets)
    assert list(series["anomalous cars"])[-1] == 3
    assert series["new"].sum() == 3
    assert present.onset_series([]).empty


def test_driving_sensor_counts() -> None:
    leaders = [
        {"anomaly": {"top_sensors": [{"sensor": "speed", "contribution": 0.5}]}},
        {"anomaly": {"top_sensors": [{"sensor": "speed", "contribution": 0.7}]}},
        {"anomaly": {"top_sensors": [{"sensor": "coolant_temp", "contribution": 0.9}]}},
    ]
    counts = present.driving_sensor_counts(leaders)
    assert list(counts["sensor"]) == ["speed", "coolant_temp"]
    assert list(counts["cars"]) == [2, 1]
    assert counts["mean contribution"].iloc[0] == pytest.approx(0.6)


def test_event_rate_needs_two_samples_a_second_apart() -> None:
    state: dict = {}
    assert streams.rate(state, 100, now=10.0) is None
    assert streams.rate(state, 150, now=10.5) is None
    assert streams.rate(state, 300, now=12.0) == pytest.approx(100.0)


def test_ago() -> None:
    assert present.ago(CLOCK - timedelta(minutes=3), CLOCK) == "3 min before"
    assert present.ago(None, CLOCK) == "never"
