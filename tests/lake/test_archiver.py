"""The archiver against the real stack: round trip, rotation rules, late events, filters."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from fleet import clients
from fleet.avro import HEADER_SIZE, telemetry_codec, zigzag_varint
from fleet.settings import Settings
from fleet.waiting import wait_for
from lake.naming import HOUR_MS, hour_of, object_name
from lake.reader import Lake
from lake.segments import PartitionSegmenter, Rules, Segment
from tests.lake.conftest import archiving, committed, end_offsets, produce, with_lake
from tests.lake.helpers import T0, reading

pytestmark = pytest.mark.integration


def as_stored(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records as Avro stores them (floats are 32-bit)."""
    codec = telemetry_codec()
    return [
        fastavro.schemaless_reader(io.BytesIO(m[HEADER_SIZE:]), codec.schema)  # type: ignore[misc]
        for m in codec.encode_many(records)
    ]


def wait_archived(settings: Settings, partitions: int | None = None, timeout: float = 60) -> None:
    """Until the lake's group has committed every partition's end offset."""
    topic = settings.topics.telemetry
    n = partitions or settings.topics.telemetry_partitions
    ends = end_offsets(settings, topic, n)
    wait_for(
        lambda: committed(settings, topic, n) == ends,
        timeout,
        f"the archiver to commit {ends}",
        interval=0.3,
    )


def test_round_trip_every_event_once_equal_field_by_field(lake_settings: Settings) -> None:
    records = [reading(i, event_time=T0 + i * 4000) for i in range(3000)]  # 3h20m, 7 cars
    produce(lake_settings, records)
    with archiving(lake_settings):
        wait_archived(lake_settings)
    lake = Lake(lake_settings)
    frame = lake.read_polars("telemetry")
    rows = frame.to_dicts()
    assert len(rows) == len(records)
    positions = {(r.pop("kafka_partition"), r.pop("kafka_offset")) for r in rows}
    assert len(positions) == len(records)  # every Kafka position once
    key = lambda r: (r["car_id"], r["seq"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(as_stored(records), key=key)
    # Partitioned by event hour: every object holds only its own hour.
    objects = lake.objects("telemetry")
    assert {o.hour for o in objects} == {hour_of(T0) + h for h in range(4)}
    for obj in objects:
        part = lake.read_polars("telemetry", start=obj.hour * HOUR_MS, end=(obj.hour + 1) * HOUR_MS)
        assert part.height > 0
    # The pandas view has the same rows.
    assert len(lake.read_pandas("telemetry", columns=["car_id", "speed"])) == len(records)


def expected_objects(
    settings: Settings, records: list[dict[str, Any]], partition: int, rules: Rules
) -> list[tuple[str, int]]:
    """Object names and record counts the pure rules predict for one partition's records."""
    seg = PartitionSegmenter(partition, rules)
    closed: list[Segment] = []
    messages = telemetry_codec().encode_many(records)
    for offset, (record, message) in enumerate(zip(records, messages, strict=True)):
        payload = message[HEADER_SIZE:] + zigzag_varint(partition) + zigzag_varint(offset)
        closed += seg.add(offset, record["event_time"], record["car_id"].encode(), payload)
    tail = seg.flush(len(records))
    closed += [tail] if tail else []
    topic = settings.topics.telemetry
    return sorted(
        (object_name("telemetry/v1", f.hour, topic, partition, f.first_offset), len(f.payloads))
        for s in closed
        for f in s.files.values()
    )


def archived_objects(settings: Settings) -> list[tuple[str, int]]:
    return sorted((o.name, o.records or 0) for o in Lake(settings).objects("telemetry"))


@pytest.mark.parametrize(
    ("rule", "changes", "step_ms"),
    [
        ("count", {"max_records": 70}, 1000),
        ("bytes", {"max_bytes": 4000}, 1000),
        ("window", {"window_seconds": 900}, 20_000),  # 15-minute windows over ~1.7 h
    ],
)
def test_rotation_by_each_rule_matches_the_pure_rules(
    lake_settings: Settings, rule: str, changes: dict[str, Any], step_ms: int
) -> None:
    settings = with_lake(lake_settings, **changes)
    records = [reading(i, car="car-r", event_time=T0 + i * step_ms) for i in range(300)]
    produce(settings, records, partition=2)
    with archiving(settings) as archiver:
        wait_archived(settings)
        expected = expected_objects(settings, records, 2, archiver.rules)
    got = archived_objects(settings)
    assert got == expected
    assert len(got) >= 3, f"the {rule} rule should have cut more than once"
    assert sum(n for _, n in got) == len(records)


def test_late_events_go_to_their_own_event_time_partition(lake_settings: Settings) -> None:
    now = T0 + 5 * HOUR_MS
    records = [reading(i, car="car-a", event_time=now + i * 1000) for i in range(50)]
    late = [reading(100 + i, car="car-late", event_time=T0 + 2 * HOUR_MS + i) for i in range(5)]
    mixed = records[:20] + late + records[20:]
    produce(lake_settings, mixed, partition=0)
    with archiving(lake_settings):
        wait_archived(lake_settings)
    lake = Lake(lake_settings)
    objects = lake.objects("telemetry")
    late_hour = hour_of(T0 + 2 * HOUR_MS)
    by_hour = {o.hour: o for o in objects}
    assert set(by_hour) == {late_hour, hour_of(now)}
    assert "date=2026-01-01/hour=02/" in by_hour[late_hour].name
    assert by_hour[late_hour].name.endswith("+0+20.avro")  # its first record's offset
    assert by_hour[late_hour].records == 5
    back = lake.read_polars("telemetry", start=T0 + 2 * HOUR_MS, end=T0 + 3 * HOUR_MS)
    assert sorted(back["seq"].to_list()) == [100, 101, 102, 103, 104]


def test_time_range_and_car_filters_read_only_the_objects_they_need(
    lake_settings: Settings,
) -> None:
    a = [reading(i, car="car-a", event_time=T0 + i * 60_000) for i in range(240)]  # 4 hours
    b = [reading(i, car="car-b", event_time=T0 + i * 60_000) for i in range(240)]
    produce(lake_settings, a, partition=0)
    produce(lake_settings, b, partition=1)
    with archiving(lake_settings):
        wait_archived(lake_settings)
    lake = Lake(lake_settings)
    assert len(lake.objects("telemetry")) == 8  # 2 partitions x 4 hours

    start, end = T0 + HOUR_MS + 30 * 60_000, T0 + 2 * HOUR_MS + 30 * 60_000
    window = lake.read_polars("telemetry", start=start, end=end)
    assert window.height == 2 * 60
    assert window["event_time"].min() == start and window["event_time"].max() < end
    assert {name.split("/hour=")[1][:2] for name in lake.last_read} == {"01", "02"}
    assert len(lake.last_read) == 4

    only_a = lake.read_polars("telemetry", cars=["car-a"], columns=["car_id", "seq"])
    assert only_a.columns == ["car_id", "seq"]
    assert only_a.height == 240 and set(only_a["car_id"]) == {"car-a"}
    assert len(lake.last_read) == 4 and all("+0+" in n for n in lake.last_read)

    both = lake.read_polars("telemetry", start=start, end=end, cars=["car-b"])
    assert both.height == 60 and len(lake.last_read) == 2
    nothing = lake.read_polars("telemetry", cars=["car-z"], columns=["car_id"])
    assert nothing.height == 0 and lake.last_read == [] and nothing.columns == ["car_id"]


def test_anomalies_are_a_second_dataset(lake_settings: Settings) -> None:
    from fleet.avro import anomaly_codec

    scores = [
        {
            "car_id": f"car-{i % 3}",
            "event_time": T0 + i * 1000,
            "seq": i,
            "score": i / 10,
            "threshold": 1.0,
            "is_anomaly": i % 10 == 0,
            "model_name": "ae",
            "model_version": "1",
            "top_sensors": [{"sensor": "speed", "contribution": 0.5}],
            "scored_at": T0 + i * 1000 + 5,
        }
        for i in range(40)
    ]
    producer = clients.kafka_producer(lake_settings)
    for s, v in zip(scores, anomaly_codec().encode_many(scores), strict=True):
        producer.produce(lake_settings.topics.anomalies, key=s["car_id"], value=v)
    assert producer.flush(30) == 0
    with archiving(lake_settings):
        ends = end_offsets(lake_settings, lake_settings.topics.anomalies, 6)
        wait_for(
            lambda: committed(lake_settings, lake_settings.topics.anomalies, 6) == ends,
            60,
            "anomalies archived",
        )
    lake = Lake(lake_settings)
    assert all(o.name.startswith("anomalies/v1/date=") for o in lake.objects("anomalies"))
    frame = lake.read_polars("anomalies")
    assert sorted(frame["seq"].to_list()) == list(range(40))
    assert frame.filter(frame["seq"] == 3)["top_sensors"].to_list() == [
        [{"sensor": "speed", "contribution": 0.5}]
    ]
    assert lake.objects("telemetry") == []
