"""A car's history past the history collection's retention comes from the lake, each event once
(real Kafka, archiver, history projection, MongoDB-wire server and GCS emulator)."""

from __future__ import annotations

import datetime as dt
import time

from fleet import clients
from fleet.settings import Settings
from fleet.waiting import wait_for
from lake.history import car_history, lake_until
from lake.reader import Lake
from tests.lake.conftest import archiving, committed, end_offsets, produce
from tests.lake.helpers import reading
from tests.lake.test_archiver import wait_archived
from tests.twin.kafka_helpers import running_history

CAR = "car-history"
DAY_MS = 86_400_000


def score(seq: int, event_time: int) -> dict:
    return {
        "car_id": CAR,
        "event_time": event_time,
        "seq": seq,
        "score": seq / 100,
        "threshold": 0.5,
        "is_anomaly": False,
        "model_name": "ae",
        "model_version": "1",
        "top_sensors": [{"sensor": "speed", "contribution": 0.5}],
        "scored_at": event_time + 5,
    }


def test_a_range_past_the_retention_reads_the_older_part_from_the_lake(
    lake_settings: Settings,
) -> None:
    now = int(time.time() * 1000)
    old = [now - 10 * DAY_MS + i * 10_000 for i in range(30)]  # before a 7-day retention
    recent = [now - 3_600_000 + i * 10_000 for i in range(20)]
    times = old + recent
    produce(lake_settings, [reading(i, CAR, event_time=t) for i, t in enumerate(times)])
    produce(lake_settings, [score(i, t) for i, t in enumerate(times) if i % 5 == 0])
    settings = lake_settings.model_copy(
        update={"twin": lake_settings.twin.model_copy(update={"history_retention_days": 7})}
    )
    database = clients.mongo_database(settings)
    collection = database[settings.twin.history_collection]
    with archiving(settings), running_history(settings):
        wait_archived(settings)
        anomalies = settings.topics.anomalies
        ends = end_offsets(settings, anomalies, settings.topics.anomalies_partitions)
        wait_for(
            lambda: committed(settings, anomalies, settings.topics.anomalies_partitions) == ends,
            60,
            "scores archived",
        )
        wait_for(
            lambda: (
                collection.count_documents({"car": CAR, "t": {"$gte": to_dt(recent[0])}}) >= 20 + 4
            ),
            60,
            "the recent readings and scores in the history collection",
        )

    def history_since_the_oldest() -> list[dict]:
        return car_history(
            database,
            settings.twin.history_collection,
            CAR,
            to_dt(old[0]),
            lake=Lake(settings),
            retention_days=7,
            topics={"telemetry": settings.topics.telemetry, "anomalies": anomalies},
        )

    # The collection holds everything so far: its range is answered without the lake.
    whole = history_since_the_oldest()
    assert len(whole) == 60 and not any(e.get("source") == "lake" for e in whole)
    # What the collection's TTL monitor does in its own time: the older ones expire.
    expired = collection.delete_many({"car": CAR, "t": {"$lt": to_dt(now - 7 * DAY_MS)}})
    assert expired.deleted_count == 36  # 30 readings and 6 scores
    events = history_since_the_oldest()
    readings = [e for e in events if e["kind"] == "reading"]
    scores = [e for e in events if e["kind"] == "score"]
    assert [r["seq"] for r in readings] == list(range(50))  # each once, oldest first
    assert [s["seq"] for s in scores] == list(range(0, 50, 5))
    from_lake = {e["seq"] for e in events if e.get("source") == "lake"}
    assert from_lake == set(range(30))  # exactly the ones older than the retention
    assert readings[0]["speed"] == reading(0, CAR)["speed"]  # the lake's values, same shape
    assert readings[0]["t"] == to_dt(old[0]).replace(tzinfo=None)  # naive UTC, as pymongo's
    # Without the lake, a range past the retention has only what the collection keeps.
    kept = car_history(database, settings.twin.history_collection, CAR, to_dt(recent[0]))
    assert [e["seq"] for e in kept if e["kind"] == "reading"] == list(range(30, 50))


def to_dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


def at(days_ago: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days_ago)


def test_the_lake_answers_only_before_what_the_collection_has() -> None:
    def doc(days_ago: float) -> dict:
        return {"t": at(days_ago).replace(tzinfo=None)}  # naive UTC, as the collection's

    # Within the retention, or with no retention: the collection alone.
    assert lake_until(at(3), None, [], retention_days=7, now=NOW) is None
    assert lake_until(at(30), None, [], retention_days=0, now=NOW) is None
    # Past it: the lake up to the collection's oldest event in the range...
    assert lake_until(at(10), None, [doc(6.5), doc(1)], retention_days=7, now=NOW) == at(6.5)
    # ...all of it when the collection has none (the end is inclusive)...
    end = lake_until(at(10), at(8), [], retention_days=7, now=NOW)
    assert end == at(8) + dt.timedelta(milliseconds=1)
    # ...and nothing when the collection still holds the range's start.
    assert lake_until(at(10), None, [doc(10)], retention_days=7, now=NOW) is None
