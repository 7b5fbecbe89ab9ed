"""What the platform has done so far, read from the servers the way a user would check it.

`fleet demo` shows these figures as its status and uses them to decide when to train; the
demo's test waits on the same questions. Each probe is cheap (watermarks, index-backed
counts, one listing) and a server that does not answer yields None ("unknown"), never an
exception.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fleet import clients
from fleet.avro import AvroDecodeError, model_announcement_codec
from fleet.settings import Settings

LAKE_EVERY = 10.0


@dataclass(frozen=True)
class Snapshot:
    readings: int | None = None  # telemetry events in Kafka
    dead_letters: int | None = None
    scores: int | None = None  # anomaly events in Kafka
    twins: int | None = None
    scored_twins: int | None = None  # twins carrying an anomaly score
    lake_objects: int | None = None
    model_version: str | None = None  # the promoted version of settings.ml.model_name
    taken_at: float = 0.0


class Observer:
    """Probes the servers; ``snapshot()`` on demand, or ``start()`` to refresh on a thread."""

    def __init__(self, settings: Settings, interval: float = 2.0) -> None:
        self.settings = settings
        self.interval = interval
        self._consumer: Consumer | None = None
        self._mongo: Any = None
        self._bucket: Any = None
        self._models_seen: tuple[int, str | None] = (0, None)  # (high watermark, version)
        self._lake_seen: tuple[int | None, float] = (None, 0.0)  # (objects, when counted)
        self._latest = Snapshot()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- probes ---

    def _kafka(self) -> Consumer:
        if self._consumer is None:
            # Never subscribes or commits: watermarks and the models topic only.
            self._consumer = clients.kafka_consumer(self.settings, "fleet-demo-observer")
        return self._consumer

    def events(self, topic: str) -> int | None:
        """Messages in ``topic`` (sum over partitions of high - low watermark)."""
        try:
            consumer = self._kafka()
            metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
            if metadata is None or metadata.error is not None:
                return None
            total = 0
            for p in metadata.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                total += high - low
            return total
        except Exception:
            return None

    def promoted_version(self) -> str | None:
        """The latest version announced for ``ml.model_name`` on the compacted models topic."""
        topic = self.settings.topics.models
        try:
            consumer = self._kafka()
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
            if high <= 0:
                return None
            if high == self._models_seen[0]:
                return self._models_seen[1]  # nothing announced since the last look
            consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            codec = model_announcement_codec()
            version = None
            deadline = time.monotonic() + 10
            position: int = -1
            while position < high - 1 and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error() is not None:
                    continue
                position = message.offset() or 0
                with contextlib.suppress(AvroDecodeError):
                    value = message.value()
                    record = codec.decode(value) if value else None
                    if record and record["model_name"] == self.settings.ml.model_name:
                        version = str(record["model_version"])
            consumer.unassign()
            if position >= high - 1:
                self._models_seen = (high, version)
            return version
        except Exception:
            return None

    def _twins(self) -> Any:
        from twin.live import live_twins

        if self._mongo is None:
            self._mongo = clients.mongo_client(self.settings, serverSelectionTimeoutMS=3000)
        return live_twins(
            self._mongo[self.settings.mongodb.database], self.settings.twin.collection
        )

    def twin_counts(self) -> tuple[int | None, int | None]:
        try:
            twins = self._twins()
            total = twins.estimated_document_count()
            # Index-backed (anomaly_score): scores are squared errors, never negative.
            scored = twins.count_documents({"anomaly.score": {"$gte": 0}})
            return total, scored
        except Exception:
            return None, None

    def lake_objects(self) -> int | None:
        # A listing grows with the lake: at most one every LAKE_EVERY seconds.
        counted, at = self._lake_seen
        if counted is not None and time.monotonic() - at < LAKE_EVERY:
            return counted
        try:
            if self._bucket is None:
                self._bucket = clients.gcs_bucket(self.settings)
            counted = sum(1 for _ in self._bucket.list_blobs(prefix="telemetry/", timeout=10))
        except Exception:
            return None
        self._lake_seen = (counted, time.monotonic())
        return counted

    def snapshot(self) -> Snapshot:
        topics = self.settings.topics
        twins, scored = self.twin_counts()
        snap = Snapshot(
            readings=self.events(topics.telemetry),
            dead_letters=self.events(topics.dead_letters),
            scores=self.events(topics.anomalies),
            twins=twins,
            scored_twins=scored,
            lake_objects=self.lake_objects(),
            model_version=self.promoted_version(),
            taken_at=time.monotonic(),
        )
        with self._lock:
            self._latest = snap
        return snap

    # --- on a thread ---

    @property
    def latest(self) -> Snapshot:
        with self._lock:
            return replace(self._latest)

    def start(self) -> Observer:
        def loop() -> None:
            while not self._stop.is_set():
                self.snapshot()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="demo-observer", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
        if self._mongo is not None:
            self._mongo.close()
