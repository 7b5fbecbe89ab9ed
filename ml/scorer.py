"""Live scoring: telemetry in, one anomaly event per reading out, exactly-once in effect.

The loop: poll a batch -> decode it in bulk (``fleet.bulk_avro``, numpy over the concatenated
messages) -> features -> autoencoder (one vectorized call) -> encode the anomaly events in bulk
-> produce keyed by car id (idempotent producer) -> wait for delivery -> commit the batch's
offsets. Every feature is a function of the reading alone (ml/features.py), so the scorer keeps
no per-car state: a crash between delivery and commit re-scores that batch on restart with
identical scores; each event names the reading it scores (car id, seq, event time), so a
duplicate is recognised as one downstream: the twin keeps a reading's first score.

Models: the scorer follows ``settings.ml.model_name`` on the compacted models topic. At start
it reads that topic to its end and loads the latest promoted version (waiting for one if there
is none); between batches it checks for new announcements and switches before the next batch,
so every reading is scored by exactly one model version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import Counter, Gauge, Histogram

from fleet import clients
from fleet.avro import AvroDecodeError, model_announcement_codec
from fleet.bulk_avro import AnomalyBatchEncoder, DecodedBatch, TelemetryBatchDecoder
from fleet.logs import get_logger
from fleet.service import Shutdown
from fleet.settings import Settings
from ml import features as ft
from ml import registry

log = get_logger("ml.scorer")

SCORED = Counter("fleet_ml_scored_total", "readings scored")
ANOMALIES = Counter("fleet_ml_anomalies_total", "readings scored as anomalous")
UNDECODABLE = Counter("fleet_ml_undecodable_total", "telemetry messages that did not decode")
RELOADS = Counter("fleet_ml_model_reloads_total", "model versions loaded")
BATCH_SECONDS = Histogram(
    "fleet_ml_batch_seconds",
    "time to score, produce and commit one batch",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LATENCY = Histogram(
    "fleet_ml_latency_seconds",
    "from a reading's append to Kafka to its score's delivery",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
MODEL = Gauge("fleet_ml_model_info", "the model version scoring (1)", ["name", "version"])


def anomaly_events(
    records: list[dict[str, Any]],
    *,
    scores: np.ndarray,
    errors: np.ndarray,
    model: registry.LoadedModel,
    top: int,
    scored_at: int,
) -> list[dict[str, Any]]:
    """One anomaly event per scored reading (pure)."""
    names = np.asarray(model.normalizer.names, dtype=object)
    k = min(top, errors.shape[1]) if len(errors) else 0
    # Top-k per row in one vectorized step; only the dict building is per reading.
    top_idx = np.argsort(-errors, axis=1)[:, :k] if k else np.zeros((len(records), 0), int)
    top_names = names[top_idx].tolist()
    top_vals = np.take_along_axis(errors, top_idx, axis=1).astype(float).tolist()
    verdict = (scores >= model.threshold).tolist()
    score_list = scores.astype(float).tolist()
    threshold, name, version = model.threshold, model.name, model.version
    return [
        {
            "car_id": r["car_id"],
            "event_time": r["event_time"],
            "seq": r["seq"],
            "score": score,
            "threshold": threshold,
            "is_anomaly": flag,
            "model_name": name,
            "model_version": version,
            "top_sensors": [{"sensor": n, "contribution": v} for n, v in zip(ns, vs, strict=True)],
            "scored_at": scored_at,
        }
        for r, score, flag, ns, vs in zip(
            records, score_list, verdict, top_names, top_vals, strict=True
        )
    ]


class ModelWatcher:
    """Follows one model name on the compacted models topic (partition 0, no group)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.ml.model_name
        self.codec = model_announcement_codec()
        self.consumer: Consumer = clients.kafka_consumer(
            settings, f"{settings.groups.scorer}-models"
        )
        self.consumer.assign([TopicPartition(settings.topics.models, 0, OFFSET_BEGINNING)])

    def latest(self, timeout: float) -> dict[str, Any] | None:
        """The newest announcement for our model among messages available within ``timeout``."""
        found: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            messages = self.consumer.consume(100, timeout=remaining)
            for message in messages:
                value = message.value()
                if message.error() is not None or value is None:
                    continue
                try:
                    record = self.codec.decode(value)
                except AvroDecodeError as exc:
                    log.warning("bad model announcement", error=str(exc))
                    continue
                if record["model_name"] == self.name:
                    found = record
            if not messages or time.monotonic() >= deadline:
                return found

    def caught_up(self) -> dict[str, Any] | None:
        """Read the topic to its current end; the newest announcement for our model."""
        partition = TopicPartition(self.settings.topics.models, 0)
        _low, high = self.consumer.get_watermark_offsets(partition, timeout=15)
        found = None
        while high > 0:
            found = self.latest(1.0) or found
            if self.consumer.position([partition])[0].offset >= high:
                break
        return found

    def close(self) -> None:
        self.consumer.close()


class Scorer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.decoder = TelemetryBatchDecoder()
        self.encoder = AnomalyBatchEncoder()
        self._keys: dict[str, bytes] = {}
        self.model: registry.LoadedModel | None = None
        self.scored = 0
        self.batches = 0
        self.first_batch_at: float | None = None  # monotonic, for throughput figures
        self.last_batch_at: float | None = None
        self.stopping: Callable[[], bool] = lambda: False

    def _switch(self, announcement: dict[str, Any]) -> None:
        name, version = announcement["model_name"], announcement["model_version"]
        if self.model is not None and self.model.version == version:
            return
        try:
            model = registry.load(self.settings, name, version)
        except Exception as exc:
            if self.model is None:
                raise
            # A bad promotion must not stop scoring: keep the current version.
            log.error("cannot load promoted model", version=version, error=str(exc))
            return
        if self.model is not None:
            MODEL.remove(self.model.name, self.model.version)
        MODEL.labels(name, version).set(1)
        RELOADS.inc()
        log.info(
            "model loaded",
            name=name,
            version=version,
            previous=self.model.version if self.model else None,
            after_batches=self.batches,
        )
        self.model = model

    def score_batch(
        self, messages: list[Message], producer: Any, consumer: Consumer
    ) -> tuple[int, int]:
        """Score one batch, produce its events, wait for delivery, commit. (scored, anomalies)"""
        assert self.model is not None
        started = time.monotonic()
        if self.first_batch_at is None:
            self.first_batch_at = started
        offsets: dict[tuple[str, int], int] = {}
        for m in messages:  # messages of a partition arrive in offset order
            offsets[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
        batch, payloads, verdict = self.compute([m.value() or b"" for m in messages])
        for i, exc in batch.errors:
            UNDECODABLE.inc()
            log.warning("undecodable telemetry", offset=messages[i].offset(), error=str(exc))
        n, anomalies = len(batch), int(verdict.sum())
        if n:
            self._produce(producer, batch.columns["car_id"].tolist(), payloads)
            now = time.time()
            appended = np.array([messages[i].timestamp()[1] for i in batch.index.tolist()])
            for latency in np.maximum(0.0, now - appended / 1000.0).tolist():
                LATENCY.observe(latency)
        try:
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # Partitions moved to another scorer mid-batch: it re-scores from the last commit,
            # and those duplicate events are harmless (keyed to the reading they score).
            log.warning("commit failed after a rebalance", error=str(exc))
        SCORED.inc(n)
        ANOMALIES.inc(anomalies)
        BATCH_SECONDS.observe(time.monotonic() - started)
        self.scored += n
        self.batches += 1
        self.last_batch_at = time.monotonic()
        return n, anomalies

    def compute(
        self, values: list[bytes]
    ) -> tuple[DecodedBatch, list[bytes], npt.NDArray[np.bool_]]:
        """The pure part of a batch: messages -> (decoded, anomaly event payloads in decoded
        order, verdicts). Touches no server and no scorer state."""
        model = self.model
        assert model is not None
        batch = self.decoder.decode(values)
        if not len(batch):
            return batch, [], np.zeros(0, bool)
        columns = batch.columns
        x = ft.transform(columns, model.normalizer)
        scores, errors = model.scores(x)
        k = min(self.settings.ml.top_sensors, errors.shape[1])
        top_index = np.argsort(-errors, axis=1)[:, :k]
        verdict = scores >= model.threshold
        payloads = self.encoder.encode(
            car_ids=columns["car_id"],
            event_time=columns["event_time"],
            seq=columns["seq"],
            scores=scores,
            threshold=model.threshold,
            is_anomaly=verdict,
            model_name=model.name,
            model_version=model.version,
            top_index=top_index,
            top_values=np.take_along_axis(errors, top_index, axis=1),
            names=model.normalizer.names,
            scored_at=int(time.time() * 1000),
        )
        return batch, payloads, verdict

    def _produce(self, producer: Any, cars: list[str], payloads: list[bytes]) -> None:
        """Produce keyed by car id and wait until every event is acknowledged (acks=all)."""
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        topic, produce = self.settings.topics.anomalies, producer.produce
        keys = self._keys
        for car, value in zip(cars, payloads, strict=True):
            key = keys.get(car)
            if key is None:
                key = keys[car] = car.encode()
            try:
                produce(topic, value, key, on_delivery=delivered)
            except BufferError:  # the local queue is full: let it drain, then retry once more
                while True:
                    producer.poll(0.05)
                    try:
                        produce(topic, value, key, on_delivery=delivered)
                        break
                    except BufferError:
                        continue
        remaining = producer.flush(5)
        # Kafka away (restarting, say): keep waiting for delivery, as the bridge does,
        # rather than exit and reload the model once it is back. Stopping meanwhile
        # leaves the batch uncommitted: it is scored again after a restart.
        while remaining and not failures and not self.stopping():
            log.warning("kafka away; waiting to deliver scores", undelivered=remaining)
            remaining = producer.flush(5)
        if remaining or failures:
            # No commit: the batch is scored again after a restart (duplicates harmless).
            raise RuntimeError(f"{remaining} anomaly events undelivered: {failures[:3]}")

    def run(self, shutdown: Shutdown, max_idle: float | None = None) -> None:
        """Score until shutdown (or ``max_idle`` seconds without input, for benchmarks)."""
        settings = self.settings
        self.stopping = lambda: shutdown.requested
        watcher = ModelWatcher(settings)
        consumer = clients.kafka_consumer(
            settings, settings.groups.scorer, **{"session.timeout.ms": 10_000}
        )
        # The batch is flushed at once and waited for: no linger, large batches per partition;
        # delivery reports only for failures (a Python callback per event costs ~1 µs).
        producer = clients.kafka_producer(
            settings,
            **{
                "delivery.report.only.error": True,
                "linger.ms": 1,
                "batch.num.messages": 10_000,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 200_000,
                # No delivery timeout: a score waits for Kafka to come back instead of failing.
                "message.timeout.ms": 0,
            },
        )
        try:
            initial = watcher.caught_up()
            while initial is None and not shutdown.requested:
                log.info("waiting for a promoted model", name=watcher.name)
                initial = watcher.latest(2.0)
            if initial is None:
                return
            self._switch(initial)
            consumer.subscribe([settings.topics.telemetry])
            idle_since = time.monotonic()
            while not shutdown.requested:
                # Batch boundary: a newly promoted version takes over before the next poll.
                announced = watcher.latest(0.0)
                if announced is not None:
                    self._switch(announced)
                messages = consumer.consume(settings.ml.batch_size, settings.ml.poll_timeout)
                messages = [m for m in messages if not _skip(m)]
                if not messages:
                    if max_idle is not None and time.monotonic() - idle_since > max_idle:
                        break
                    continue
                idle_since = time.monotonic()
                self.score_batch(messages, producer, consumer)
        finally:
            log.info("scorer stopping", scored=self.scored, batches=self.batches)
            consumer.close()
            watcher.close()
            producer.flush(30)


def _skip(message: Message) -> bool:
    error = message.error()
    if error is None:
        return False
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consume error", error=str(error))
    return True
