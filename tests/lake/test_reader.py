"""The reader's pure parts: time bounds, object pruning by metadata, empty results."""

from __future__ import annotations

from datetime import UTC, datetime

from lake.reader import Lake, LakeObject, to_ms
from tests.lake.helpers import T0


def obj(min_time: int | None, max_time: int | None, cars: set[str] | None) -> LakeObject:
    return LakeObject(
        "x", 1, 0, "t", 0, 0, 10, min_time, max_time, None if cars is None else frozenset(cars)
    )


def test_time_bounds_accept_ms_aware_and_naive_utc_datetimes() -> None:
    assert to_ms(None) is None
    assert to_ms(T0) == T0
    assert to_ms(datetime(2026, 1, 1, tzinfo=UTC)) == T0
    assert to_ms(datetime(2026, 1, 1)) == T0  # naive = UTC


def test_objects_are_pruned_by_event_time_bounds_and_car_lists() -> None:
    o = obj(T0 + 100, T0 + 200, {"a", "b"})
    assert o.may_match(None, None, None)
    assert o.may_match(T0 + 200, None, None)  # start is inclusive
    assert not o.may_match(T0 + 201, None, None)
    assert not o.may_match(None, T0 + 100, None)  # end is exclusive
    assert o.may_match(None, T0 + 101, frozenset({"b", "z"}))
    assert not o.may_match(None, None, frozenset({"z"}))
    # Without metadata an object may hold anything.
    assert obj(None, None, None).may_match(T0, T0 + 1, frozenset({"z"}))


def test_an_empty_result_still_has_the_datasets_columns_and_types() -> None:
    empty = Lake._empty("telemetry", None)
    assert empty.height == 0
    assert empty.columns[:3] == ["car_id", "event_time", "seq"]
    assert empty.columns[-2:] == ["kafka_partition", "kafka_offset"]
    assert str(empty.schema["speed"]) == "Float32"
    anomalies = Lake._empty("anomalies", ["car_id", "score"])
    assert anomalies.columns == ["car_id", "score"] and anomalies.height == 0


def test_large_reads_go_through_the_progress_bar_in_order() -> None:
    import polars as pl

    lake = Lake.__new__(Lake)
    lake.threads = 4
    objects = [LakeObject(str(i), 1, 0, "t", 0, i, 1, None, None, None) for i in range(25)]
    frames = lake._map(lambda o: pl.DataFrame({"x": [o.first_offset]}), objects, True, "reading")
    assert [f["x"][0] for f in frames] == list(range(25))
