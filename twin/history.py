"""`fleet history run`: each car's readings and scores, as they came, in a time-series collection.

The twin holds what a car *is* now; what it *was* lives here, where MongoDB keeps
measurements best: a time-series collection (``twin.history_collection``, default
``readings``) with the event time as ``t``, the car id as its metaField ``car``, granularity
seconds, and ``expireAfterSeconds`` from ``twin.history_retention_days`` (0: keep
everything). Charts of one car over a time range read it by ``(car, t)``; the lake keeps
everything older.

A thin loop in its own consumer group: poll a batch of readings and scores -> one document
per event -> one unordered bulk insert -> record the positions -> commit the offsets.

Exactly-once in effect, although a time-series collection has no unique index: every
document carries its Kafka position (``topic``, ``partition``, ``offset``), and the next
offset written per partition is recorded in ``<collection>_positions`` after each insert.
Events below it are never inserted again (a redelivered batch is skipped), and when a
partition is assigned, documents at or above it are deleted first: those are what a process
killed between its insert and its position record left behind, and their events are about to
be delivered again. A consumer group gives each partition one writer at a time. Readers
(:func:`car_history`) also drop a repeated position, so not even a fenced-off old member
writing late can show a reading twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, TopicPartition
from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid

from fleet import clients
from fleet.avro import AvroDecodeError, Codec, anomaly_codec, telemetry_codec
from fleet.contract import SENSORS
from fleet.logs import get_logger
from fleet.service import Shutdown
from fleet.settings import Settings
from twin.project import Raw, log_undecodable, poll

log = get_logger("twin.history")

Kind = Literal["reading", "score"]
Document = dict[str, Any]
#: Events per batch at most (the insert is one round trip; memory ~1 kB an event).
BATCH_EVENTS = 20_000


def _time(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def to_document(kind: Kind, record: Mapping[str, Any], where: Raw) -> Document:
    """One event as a history document (pure)."""
    doc: Document = {
        "t": _time(record["event_time"]),
        "car": record["car_id"],
        "kind": kind,
        "seq": record["seq"],
        "topic": where.topic,
        "partition": where.partition,
        "offset": where.offset,
    }
    if kind == "reading":
        doc.update((name, record[name]) for name in SENSORS)
        if record.get("failure_modes"):
            doc["failure_modes"] = record["failure_modes"]
    else:
        doc.update(
            score=record["score"],
            threshold=record["threshold"],
            is_anomaly=record["is_anomaly"],
            model=f"{record['model_name']}:{record['model_version']}",
            top_sensors=[s["sensor"] for s in record["top_sensors"]],
        )
    return doc


def ensure_collections(database: Database[Any], name: str, retention_days: float) -> None:
    """The time-series collection (created once; retention is set at creation) and its index."""
    options: dict[str, Any] = {
        "timeseries": {"timeField": "t", "metaField": "car", "granularity": "seconds"}
    }
    if retention_days > 0:
        options["expireAfterSeconds"] = int(retention_days * 86_400)
    with contextlib.suppress(CollectionInvalid):  # exists already
        database.create_collection(name, **options)
    database[name].create_index([("car", ASCENDING), ("t", ASCENDING)])


def positions_collection(database: Database[Any], name: str) -> Collection[Any]:
    return database[f"{name}_positions"]


def _position_id(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class HistoryProjector:
    """Kafka readings and scores -> the history collection; ``run()`` until shutdown."""

    def __init__(
        self, settings: Settings, shutdown: Shutdown | None = None, **consumer_overrides: Any
    ) -> None:
        self.settings = settings
        self.consumer_overrides = consumer_overrides
        self.shutdown = shutdown or Shutdown()
        twin = settings.twin
        self.database = clients.mongo_database(settings)
        self.collection = self.database[twin.history_collection]
        self.positions = positions_collection(self.database, twin.history_collection)
        self.codecs: dict[str, tuple[Kind, Codec]] = {
            settings.topics.telemetry: ("reading", telemetry_codec()),
            settings.topics.anomalies: ("score", anomaly_codec()),
        }
        self.next: dict[tuple[str, int], int] = {}  # next offset to write, per partition
        self.written = 0
        self.skipped = 0

    def run(self) -> None:
        twin = self.settings.twin
        ensure_collections(self.database, twin.history_collection, twin.history_retention_days)
        consumer = clients.kafka_consumer(
            self.settings, self.settings.groups.history, **self.consumer_overrides
        )
        consumer.subscribe(list(self.codecs), on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("writing history", collection=self.collection.name, topics=list(self.codecs))
        try:
            while not self.shutdown.requested:
                batch = poll(consumer, BATCH_EVENTS, 1.0)
                if batch:
                    self.process(consumer, batch)
        finally:
            consumer.close()
            log.info("stopped", written=self.written, skipped=self.skipped)

    def process(self, consumer: Consumer, batch: Sequence[Raw]) -> None:
        """Insert what is new in ``batch``, record the positions, commit the offsets."""
        fresh = [m for m in batch if m.offset >= self.next.get((m.topic, m.partition), 0)]
        self.skipped += len(batch) - len(fresh)
        documents = list(self.documents(fresh))
        if documents:
            self.collection.insert_many(documents, ordered=False)
            self.written += len(documents)
        ends: dict[tuple[str, int], int] = {}
        for message in batch:
            where = (message.topic, message.partition)
            ends[where] = max(ends.get(where, 0), message.offset + 1)
        self.positions.bulk_write(
            [
                UpdateOne({"_id": _position_id(*where)}, {"$max": {"next": end}}, upsert=True)
                for where, end in ends.items()
            ]
        )
        for where, end in ends.items():
            self.next[where] = max(self.next.get(where, 0), end)
        try:
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # The positions are recorded with the documents: a lost commit only costs a
            # redelivery, which they skip. Never crash for it (Kafka away, a rebalance).
            log.warning(
                "commit failed; these events will be redelivered and skipped", error=str(exc)
            )

    def documents(self, messages: Iterable[Raw]) -> Iterable[Document]:
        for message in messages:
            kind, codec = self.codecs[message.topic]
            try:
                record = codec.decode(message.value)
            except AvroDecodeError as exc:  # a bug upstream: logged, its offset still consumed
                log_undecodable(message, exc)
                continue
            yield to_document(kind, record, message)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Load each partition's recorded position and remove what a crashed insert left
        above it (its events are delivered again from the committed offset)."""
        for tp in partitions:
            stored = self.positions.find_one({"_id": _position_id(tp.topic, tp.partition)})
            start = int(stored["next"]) if stored else 0
            self.next[(tp.topic, tp.partition)] = start
            leftover = self.collection.delete_many(
                {"topic": tp.topic, "partition": tp.partition, "offset": {"$gte": start}}
            ).deleted_count
            if leftover:
                log.warning(
                    "removed documents of an unrecorded write",
                    topic=tp.topic,
                    partition=tp.partition,
                    documents=leftover,
                )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.next.pop((tp.topic, tp.partition), None)


def car_history(
    database: Database[Any],
    collection: str,
    car_id: str,
    since: dt.datetime,
    *,
    until: dt.datetime | None = None,
    kinds: Sequence[Kind] = ("reading", "score"),
) -> list[Document]:
    """One car's readings and scores in ``[since, until]``, oldest first, each event once."""
    query: dict[str, Any] = {"car": car_id, "t": {"$gte": since}, "kind": {"$in": list(kinds)}}
    if until is not None:
        query["t"]["$lte"] = until
    seen: set[tuple[str, int, int]] = set()
    out: list[Document] = []
    for doc in database[collection].find(query, {"_id": 0}).sort("t", ASCENDING):
        where = (doc["topic"], doc["partition"], doc["offset"])
        if where not in seen:
            seen.add(where)
            out.append(doc)
    return out
