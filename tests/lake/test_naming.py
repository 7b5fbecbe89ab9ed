from __future__ import annotations

from lake.naming import (
    HOUR_MS,
    hour_of,
    object_name,
    parse_object_name,
    prefixes_for_range,
)
from tests.lake.helpers import T0


def test_object_name_is_event_date_and_hour_with_topic_partition_and_first_offset() -> None:
    hour = hour_of(T0 + 5 * HOUR_MS + 59 * 60_000)
    name = object_name("telemetry/v1", hour, "fleet.telemetry.v1", 3, 1234)
    assert name == "telemetry/v1/date=2026-01-01/hour=05/fleet.telemetry.v1+3+1234.avro"
    parsed = parse_object_name(name)
    assert parsed is not None
    assert (parsed.prefix, parsed.hour, parsed.topic, parsed.partition, parsed.first_offset) == (
        "telemetry/v1",
        hour,
        "fleet.telemetry.v1",
        3,
        1234,
    )
    assert parse_object_name("telemetry/v1/README.txt") is None


def test_range_prefixes_list_whole_days_by_date_and_ragged_ends_by_hour() -> None:
    start = T0 + 22 * HOUR_MS + 10  # 2026-01-01 22:00
    end = T0 + 2 * 24 * HOUR_MS + 2 * HOUR_MS  # 2026-01-03 02:00 (exclusive)
    assert prefixes_for_range("t/v1", start, end) == [
        "t/v1/date=2026-01-01/hour=22/",
        "t/v1/date=2026-01-01/hour=23/",
        "t/v1/date=2026-01-02/",
        "t/v1/date=2026-01-03/hour=00/",
        "t/v1/date=2026-01-03/hour=01/",
    ]
    assert prefixes_for_range("t/v1", None, end) == ["t/v1/"]
    assert prefixes_for_range("t/v1", end, start) == []
    assert prefixes_for_range("t/v1", T0, T0 + 1) == ["t/v1/date=2026-01-01/hour=00/"]
