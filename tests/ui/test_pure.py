"""The explorer's pure parts: query building and presentation (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.ui.fleetdata import simulated_twins
from ui import present, streams
from ui.twin_reads import TableQuery, table_filter, table_rows, table_sort

CLOCK = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_no_filter_is_an_empty_query() -> None:
    assert table_filter(TableQuery(), CLOCK) == {}


def test_filters_combine_twin_filter_with_the_table_extras() -> None:
    query = TableQuery(
        search="car1.",
        condition="tire_pressure_low",
        anomaly="anomalous",
        firmware=1000,
        seen_within=timedelta(minutes=5),
    )
    where = table_filter(query, CLOCK)
    parts = where["$and"]
    assert parts[0] == {
        "anomaly.is_anomaly": True,
        "health.conditions.name": "tire_pressure_low",
        "reported.control_unit_firmware.value": 1000,
    }
    assert parts[1] == {"_id": {"$regex": r"^car1\."}}  # the prefix is escaped, anchored
    assert parts[2] == {"last_seen": {"$gte": CLOCK - timedelta(minutes=5)}}


def test_silent_for_uses_twins_not_seen_since() -> None:
    where = table_filter(TableQuery(silent_for=timedelta(hours=1)), CLOCK)
    assert where == {
        "$or": [{"last_seen": {"$lt": CLOCK - timedelta(hours=1)}}, {"last_seen": None}]
    }
    # Without a clock, time filters cannot apply.
    assert table_filter(TableQuery(silent_for=timedelta(hours=1)), None) == {}


def test_unknown_condition_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown condition"):
        table_filter(TableQuery(condition="flat_battery"), CLOCK)


def test_sorts_reverse_the_main_key_only() -> None:
    assert table_sort(TableQuery(sort="car id")) == [("_id", 1)]
    assert table_sort(TableQuery(sort="anomaly score (highest first)", reverse=True)) == [
        ("anomaly.score", 1),
        ("_id", 1),
    ]


def test_rows_and_presentation_of_simulated_twins() -> None:
    twins = simulated_twins(cars=5, steps=4, failure_rate=20.0, scored=3)
    rows = table_rows(twins)
    assert [r["car"] for r in rows] == [f"car{i}" for i in range(1, 6)]
    assert rows[4]["score"] is None and rows[0]["score"] is not None
    twin = twins[0]
    reported = present.reported_rows(twin)
    assert len(reported) == 18
    assert {r["unit"] for r in reported if r["sensor"].startswith("tire_pressure")} == {"psi"}
    frame = present.history_frame(twin)
    assert list(frame["seq"]) == [0, 1, 2, 3]
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
