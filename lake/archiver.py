"""`fleet lake run`: archive Kafka topics into the GCS lake, each event exactly once.

The loop: poll a batch -> feed each partition's segmenter (pure rotation rules) -> build and
upload the closed segments' objects (retrying with back-off while GCS is away, the data
staying in Kafka) -> commit, per partition, the offset after the last uploaded segment. The
committed offset is thus always the first record not yet durably in the lake, and a replay
after a crash rebuilds the same objects under the same names (see lake.segments).
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fastavro
import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from google.cloud import storage
from prometheus_client import Counter, Gauge, Histogram
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from fleet import clients
from fleet.avro import HEADER_SIZE, AvroDecodeError, zigzag_varint
from fleet.logs import get_logger
from fleet.service import Shutdown
from fleet.settings import Settings
from lake.avrofile import car_and_time, container_file, parse_batch, varint_suffixes
from lake.datasets import Dataset, datasets
from lake.naming import object_name
from lake.segments import PartitionSegmenter, Rules, Segment

log = get_logger("lake.archiver")

EVENTS = Counter("lake_events_archived_total", "events uploaded to the lake", ["dataset"])
SKIPPED = Counter("lake_events_skipped_total", "undecodable messages skipped", ["dataset"])
OBJECTS = Counter("lake_objects_uploaded_total", "objects uploaded", ["dataset", "reason"])
BYTES = Counter("lake_bytes_uploaded_total", "object bytes uploaded", ["dataset"])
FAILURES = Counter("lake_upload_failures_total", "failed upload attempts")
BUFFERED = Gauge("lake_buffered_records", "records in open segments, not yet in the lake")
UPLOAD_SECONDS = Histogram("lake_upload_seconds", "time to upload one batch of segments")

#: Object metadata lists the cars of a file when they fit; readers skip files by it.
CARS_METADATA_LIMIT = 4000


@dataclass(frozen=True)
class PlannedObject:
    name: str
    data: bytes
    metadata: dict[str, str]
    dataset: str
    reason: str
    records: int


def rules_from(settings: Settings) -> Rules:
    lake = settings.lake
    return Rules(
        max_records=lake.max_records,
        max_bytes=lake.max_bytes,
        window_ms=lake.window_seconds * 1000,
        grace_ms=lake.grace_seconds * 1000,
    )


def plan_objects(ds: Dataset, topic: str, segment: Segment) -> list[PlannedObject]:
    """The objects of a closed segment: pure, the same segment always gives the same bytes."""
    planned = []
    for hour in sorted(segment.files):
        f = segment.files[hour]
        name = object_name(ds.prefix, hour, topic, segment.partition, f.first_offset)
        cars = ",".join(sorted(c.decode(errors="replace") for c in f.cars))
        metadata = {
            "records": str(len(f.payloads)),
            "min_event_time": str(f.min_time),
            "max_event_time": str(f.max_time),
            "car_count": str(len(f.cars)),
        }
        if len(cars) <= CARS_METADATA_LIMIT:
            metadata["cars"] = cars
        data = container_file(ds.schema, f.payloads, name)
        planned.append(
            PlannedObject(name, data, metadata, ds.name, segment.reason, len(f.payloads))
        )
    return planned


class Archiver:
    def __init__(
        self,
        settings: Settings,
        shutdown: Shutdown | None = None,
        bucket: storage.Bucket | None = None,
        **consumer_overrides: Any,
    ) -> None:
        self.settings = settings
        self.shutdown = shutdown or Shutdown()
        self.rules = rules_from(settings)
        self.datasets = {ds.topic: ds for ds in datasets(settings)}
        self.bucket = bucket if bucket is not None else clients.gcs_bucket(settings)
        # Bigger fetches than librdkafka's 1 MB per partition: the archiver reads in bulk.
        fetch = {"max.partition.fetch.bytes": 8 * 1024 * 1024, "fetch.max.bytes": 64 * 1024 * 1024}
        self.consumer: Consumer = clients.kafka_consumer(
            settings, settings.groups.lake, **(fetch | consumer_overrides)
        )
        self.segmenters: dict[tuple[str, int], PartitionSegmenter] = {}
        self.opened_at: dict[tuple[str, int], float] = {}
        self.assigned: set[tuple[str, int]] = set()
        self.paused = False
        self.pool = ThreadPoolExecutor(max(1, settings.lake.upload_threads))

    # --- group membership: a revoked partition's open segment is dropped, never uploaded ---

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        if self.paused:
            consumer.pause(partitions)
        log.info("assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.assigned.discard(key)
            self.segmenters.pop(key, None)  # the next owner replays it from the commit
            self.opened_at.pop(key, None)
        log.info("revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    # --- the loop ---

    def run(self) -> None:
        self.consumer.subscribe(
            list(self.datasets),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info(
            "archiving",
            topics=list(self.datasets),
            bucket=self.bucket.name,
            rules=self.rules,
        )
        try:
            while not self.shutdown.requested:
                self.step(self.consumer.consume(self.settings.lake.batch_size, timeout=0.5))
            self.step([], final=True)
        finally:
            self.consumer.close()
            self.pool.shutdown()
            log.info("stopped")

    def step(self, messages: list[Message], final: bool = False) -> None:
        """Feed a batch, flush what is caught up and due, upload what closed, then commit."""
        closed = self.feed(messages)
        closed += self.flush_due(final)
        if closed:
            self.upload_and_commit(closed)
        BUFFERED.set(sum(s.open.count for s in self.segmenters.values() if s.open))

    def feed(self, messages: list[Message]) -> list[tuple[str, Segment]]:
        """Group a batch by partition and feed each group to its segmenter, vectorized."""
        good = [m for m in messages if m.error() is None]
        if len(good) < len(messages):
            for msg in messages:
                error = msg.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", error=str(error))
        # Group by partition, keeping offset order (consume returns long runs per partition).
        keys = [(m.topic(), m.partition()) for m in good]
        groups: dict[tuple[str, int], list[Message]] = {}
        if keys and keys[0] == keys[-1] and len(set(keys)) == 1:
            groups[keys[0]] = good  # type: ignore[index]
        else:
            for key, msg in zip(keys, good, strict=True):
                groups.setdefault(key, []).append(msg)  # type: ignore[arg-type]
        closed: list[tuple[str, Segment]] = []
        now = time.monotonic()
        for (topic, partition), group in groups.items():
            if (topic, partition) not in self.assigned:
                continue  # fetched before a revocation: its next owner archives it
            segmenter = self.segmenters.get((topic, partition))
            if segmenter is None:
                segmenter = self.segmenters[(topic, partition)] = PartitionSegmenter(
                    partition, self.rules
                )
            if segmenter.open is None:
                self.opened_at[(topic, partition)] = now
            columns = self._columns(self.datasets[topic], partition, group)
            closed += [(topic, s) for s in segmenter.add_batch(*columns)]
            if segmenter.open is None:
                self.opened_at.pop((topic, partition), None)
        return closed

    @staticmethod
    def _columns(
        ds: Dataset, partition: int, group: list[Message]
    ) -> tuple[np.ndarray, np.ndarray, list[bytes], list[bytes]]:
        """Offsets, event times, car ids and lake payloads (Avro body + Kafka position)."""
        values = [m.value() or b"" for m in group]
        offsets = np.array([m.offset() for m in group], np.int64)
        ok, times, cars = parse_batch(values, ds.codec.header)
        suffixes = varint_suffixes(zigzag_varint(partition), offsets)
        skip = HEADER_SIZE
        payloads = [v[skip:] + x for v, x in zip(values, suffixes, strict=True)]
        if ok.all():
            return offsets, times, cars, payloads
        keep = ok.copy()
        for i in np.flatnonzero(~ok).tolist():
            try:  # another known writer version: resolve it to the current schema
                buf = io.BytesIO()
                fastavro.schemaless_writer(buf, ds.codec.schema, ds.codec.decode(values[i]))
                body = buf.getvalue()
                car, event_time = car_and_time(body, 0)
            except (AvroDecodeError, ValueError, IndexError, UnicodeDecodeError) as exc:
                SKIPPED.labels(ds.name).inc()
                log.warning(
                    "skipping undecodable message",
                    topic=ds.topic,
                    partition=partition,
                    offset=int(offsets[i]),
                    reason=str(exc),
                )
                continue
            keep[i] = True
            times[i] = event_time
            cars[i] = car.encode()
            payloads[i] = body + suffixes[i]
        index = np.flatnonzero(keep).tolist()
        return (
            offsets[keep],
            times[keep],
            [cars[i] for i in index],
            [payloads[i] for i in index],
        )

    def flush_due(self, final: bool) -> list[tuple[str, Segment]]:
        """Cut open segments that are old enough (or all, when stopping) and caught up with the
        end of their partition: a thin stream reaches the lake without waiting for more data."""
        due_after = self.settings.lake.flush_seconds
        now = time.monotonic()
        flushed: list[tuple[str, Segment]] = []
        for key, segmenter in list(self.segmenters.items()):
            if segmenter.open is None:
                continue
            if not final and now - self.opened_at.get(key, now) < due_after:
                continue
            topic, partition = key
            tp = TopicPartition(topic, partition)
            try:
                position = self.consumer.position([tp])[0].offset
                # The high watermark of the last fetch is free; ask the broker only to confirm.
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if position < 0 or position != high:
                    continue  # not caught up: more records will decide the cut
                _, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            except Exception as exc:  # the broker is away: try again next round
                log.warning(
                    "cannot read end of log", topic=topic, partition=partition, error=str(exc)
                )
                continue
            if position != high:
                continue
            segment = segmenter.flush(high)
            self.opened_at.pop(key, None)
            if segment is not None:
                flushed.append((topic, segment))
        return flushed

    def upload_and_commit(self, closed: list[tuple[str, Segment]]) -> None:
        planned = [
            obj
            for topic, segment in closed
            for obj in plan_objects(self.datasets[topic], topic, segment)
        ]
        started = time.monotonic()
        if not self._upload_all(planned):
            return  # shutting down during an outage: nothing committed, all still in Kafka
        UPLOAD_SECONDS.observe(time.monotonic() - started)
        for obj in planned:
            EVENTS.labels(obj.dataset).inc(obj.records)
            OBJECTS.labels(obj.dataset, obj.reason).inc()
            BYTES.labels(obj.dataset).inc(len(obj.data))
        ends: dict[tuple[str, int], int] = {}
        for topic, segment in closed:
            key = (topic, segment.partition)
            ends[key] = max(ends.get(key, 0), segment.end)
        # A partition revoked meanwhile is not committed: its next owner rewrites the same objects.
        offsets = [
            TopicPartition(t, p, end) for (t, p), end in ends.items() if (t, p) in self.assigned
        ]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        log.debug(
            "committed",
            objects=len(planned),
            offsets={f"{o.topic}[{o.partition}]": o.offset for o in offsets},
        )

    def _upload_all(self, planned: list[PlannedObject]) -> bool:
        """Upload every object, retrying failures with back-off; False if stopped meanwhile."""
        pending = list(planned)
        retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.2, max=self.settings.lake.retry_max_seconds),
            sleep=self._sleep_in_group,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    pending = self._upload_some(pending)
                    if pending:
                        raise UploadIncomplete(f"{len(pending)} objects not uploaded")
        except _Stopped:
            return False
        finally:
            if self.paused:
                self.consumer.resume(self.consumer.assignment())
                self.paused = False
        return True

    def _upload_some(self, objects: list[PlannedObject]) -> list[PlannedObject]:
        """Upload in parallel; return the objects that failed."""
        timeout = 30

        def upload(obj: PlannedObject) -> PlannedObject | None:
            blob = self.bucket.blob(obj.name)
            blob.metadata = obj.metadata
            try:
                # retry=None: the back-off is ours, so the consumer group stays served meanwhile.
                blob.upload_from_string(
                    obj.data, content_type="application/avro", timeout=timeout, retry=None
                )
            except Exception as exc:
                FAILURES.inc()
                log.debug("upload failed", name=obj.name, error=str(exc))
                return obj
            return None

        return [obj for obj in self.pool.map(upload, objects) if obj is not None]

    def _sleep_in_group(self, seconds: float) -> None:
        """Wait out a back-off without leaving the consumer group: pause fetching and poll."""
        if not self.paused:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.shutdown.requested:
                raise _Stopped
            message = self.consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
            if message is not None and message.error() is None:
                # Paused partitions deliver nothing; anything else is a bug worth seeing.
                raise RuntimeError("message received while paused")

    def _log_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "GCS upload failed; data stays in Kafka, retrying",
            attempt=state.attempt_number,
            retry_in=round(delay, 1),
            error=str(error),
        )


class UploadIncomplete(RuntimeError):
    pass


class _Stopped(Exception):
    pass
