"""The explorer's first-page anchors against the real MongoDB-wire server: guessed from a
sample of car ids or learned, then remembered, and never learned twice at the same time."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fleet import clients
from fleet.settings import Settings
from twin import store
from ui import anchors, twin_reads
from ui.twin_reads import TableQuery

pytestmark = pytest.mark.integration

Fleet = tuple[Settings, list[dict[str, Any]]]


def score(twin: dict[str, Any]) -> float:
    return float((twin["anomaly"] or {"score": 0.0})["score"])


def where(settings: Settings) -> twin_reads.Where:
    return (settings.mongodb_uri, settings.mongodb.database, settings.twin.collection)


@pytest.mark.parametrize("sampled", [[30, 55], [49], [0], [59], []])
@pytest.mark.parametrize("reverse", [False, True])
def test_a_first_page_from_a_guessed_anchor_is_the_first_page(
    fleet: Fleet, sampled: list[int], reverse: bool
) -> None:
    """Whichever cars the sample of ids holds (or none), the first page by id is the first 50
    cars, and its last row becomes the remembered anchor."""
    settings, twins = fleet
    ids = sorted(t["_id"] for t in twins)
    key, query = where(settings), TableQuery(reverse=reverse)
    anchors.ANCHORS.pop(anchors.anchor_key(key, query), None)
    client = clients.mongo_client(settings)
    collection = store.twins_collection(client[settings.mongodb.database], settings.twin.collection)
    rows, last = anchors.first_page(collection, key, query, None, lambda: [ids[i] for i in sampled])
    client.close()
    expected = ids[::-1][:50] if reverse else ids[:50]
    assert [r["car"] for r in rows] == expected
    assert last == (expected[-1], expected[-1])
    assert anchors.ANCHORS[anchors.anchor_key(key, query)] == last


def test_the_first_page_by_top_score_starts_from_the_anomalous_cars(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, twins = fleet
    key, query = where(settings), TableQuery(sort=twin_reads.BY_SCORE)
    anchors.ANCHORS.pop(anchors.anchor_key(key, query), None)
    used: list[Any] = []
    table_page = twin_reads.table_page

    def recording(twins: Any, query: TableQuery, clock: Any, anchor: Any, stops: Any) -> Any:
        used.append(anchor)
        return table_page(twins, query, clock, anchor, stops)

    monkeypatch.setattr(twin_reads, "table_page", recording)
    client = clients.mongo_client(settings)
    collection = store.twins_collection(client[settings.mongodb.database], settings.twin.collection)
    rows, _last = anchors.first_page(collection, key, query, None)
    client.close()
    ranked = sorted(twins, key=lambda t: (t["anomaly"] is None, -score(t), t["_id"]))
    anomalous = [t for t in ranked if t["anomaly"] and t["anomaly"]["is_anomaly"]]
    fiftieth = anomalous[: query.page_size][-1]  # or the last, if fewer
    assert used == [(fiftieth["anomaly"]["score"], fiftieth["_id"])]
    expected = ranked
    assert [r["car"] for r in rows] == [t["_id"] for t in expected[:50]]


def test_concurrent_first_pages_learn_an_anchor_once(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests for the same unanchored first page: the second waits for the first and
    reads from the anchor it learned (one whole-range read, not two)."""
    settings, _twins = fleet
    key = where(settings)
    query = TableQuery(sort="last seen (oldest first)")
    anchors.ANCHORS.pop(anchors.anchor_key(key, query), None)
    client = clients.mongo_client(settings)
    collection = store.twins_collection(client[settings.mongodb.database], settings.twin.collection)
    used: list[Any] = []
    table_page = anchors.twin_reads.table_page

    def recording(twins: Any, query: TableQuery, clock: Any, anchor: Any, stops: Any) -> Any:
        used.append(anchor)
        return table_page(twins, query, clock, anchor, stops)

    monkeypatch.setattr(anchors.twin_reads, "table_page", recording)
    pages: list[Any] = []

    def request() -> None:
        pages.append(anchors.first_page(collection, key, query, None))

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    client.close()
    assert len(pages) == 2 and pages[0] == pages[1]
    assert len(pages[0][0]) == 50
    assert used[0] is None  # the first read had no anchor ...
    assert used[1] == anchors.ANCHORS[anchors.anchor_key(key, query)]  # ... the second had it


def test_the_car_sample_comes_from_both_ends_of_every_partition(stack_env: Any) -> None:
    """Cars published in order (as a simulated fleet publishes a step): the sample holds the
    first and the last cars of each partition, so it spans the whole order."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from tests.conftest import isolate
    from tests.kafka import produce
    from tests.ui.fleetdata import simulated_events
    from ui import stream_stats

    settings = isolate(Settings())
    readings, _scores = simulated_events(cars=200, steps=1, failure_rate=0.0, scored=0)
    produce(settings, readings)
    topic = settings.topics.telemetry
    reader = clients.kafka_consumer(settings, "test-sample-reader")
    partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    order: dict[int, list[str]] = {}
    while sum(len(keys) for keys in order.values()) < len(readings):
        for message in reader.consume(1000, timeout=1.0):
            if message.error() is None:
                order.setdefault(message.partition() or 0, []).append(message.key().decode())
    reader.close()

    sample = set(stream_stats.sample_keys(settings, topic, per_end=3))
    ends = {key for keys in order.values() for key in (*keys[:3], *keys[-3:])}
    assert sample == ends
    assert stream_stats.sample_keys(settings, "no-such-topic") == ()
