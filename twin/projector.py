"""`fleet twin run`: the projector service.

A thin loop: poll a batch from the telemetry and anomaly topics -> decode -> fold per car ->
one unordered bulk write -> commit the offsets. Offsets are committed only after the write;
the positions stored on the twins (same document, same write as the state) are the truth
about what was applied, so a redelivery after a crash, a failed commit or a rebalance
changes nothing. MongoDB or Kafka away: retry with backoff until they are back or a
shutdown is requested; never crash-loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from pymongo.errors import ConnectionFailure, OperationFailure
from tenacity import Retrying, retry_if_exception, wait_exponential

from fleet import clients
from fleet.avro import Codec, anomaly_codec, command_codec, telemetry_codec
from fleet.logs import get_logger
from fleet.service import Shutdown
from fleet.settings import Settings
from twin import metrics, store
from twin.cache import TwinCache
from twin.changes import ChangeEmitter, Written
from twin.events import Envelope, Kind
from twin.project import (
    Applied,
    Raw,
    apply_batch,
    by_car,
    chunks_by_car,
    decode_messages,
    poll,
)

log = get_logger("twin.projector")
T = TypeVar("T")

#: Events asked of the first poll; later polls adapt (see `next_limit`).
INITIAL_LIMIT = 10_000
#: How long a batch may take before Kafka hands its partitions to another member (15 min;
#: Kafka's default is 5). `batch_seconds` keeps batches well below it.
MAX_POLL_INTERVAL_MS = 900_000

#: Commit failures that only mean "the group moved on": the next owner redelivers, harmlessly.
GROUP_MOVED = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
    KafkaError._STATE,
    KafkaError.GROUP_ID_NOT_FOUND,
}


def mongo_is_away(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionFailure):
        return True
    # A primary stepping down or a server shutting down: transient as well; so is a
    # transaction that met another writer's (e.g. one orphaned by a kill -9, reaped in 60 s).
    return isinstance(exc, OperationFailure) and (
        exc.has_error_label("RetryableWriteError")
        or exc.has_error_label("TransientTransactionError")
    )


def kafka_is_away(exc: BaseException) -> bool:
    if not isinstance(exc, KafkaException):
        return False
    error = exc.args[0]
    return bool(error.retriable()) or error.code() in {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }


def next_limit(
    limit: int, events: int, seconds: float, batch_size: int, batch_seconds: float
) -> int:
    """The next poll's size after a batch of ``events`` took ``seconds``: at most 4x the last,
    no more than fits in ``batch_seconds`` at the rate just seen, within [10,000, batch_size].
    A partial batch (caught up) says nothing about how much would fit: the size stays."""
    if events < limit or seconds <= 0:
        return limit
    fits = int(events * batch_seconds / seconds)
    return max(min(INITIAL_LIMIT, batch_size), min(4 * events, fits, batch_size))


def codecs_for(settings: Settings) -> dict[str, tuple[Kind, Codec]]:
    """What the projector reads: topic -> (kind of event, its codec)."""
    return {
        settings.topics.telemetry: ("telemetry", telemetry_codec()),
        settings.topics.anomalies: ("anomaly", anomaly_codec()),
        settings.topics.commands: ("command", command_codec()),
    }


def _cleared(items: list[T]) -> list[T]:
    """The list emptied: a retried write reports its cars afresh."""
    items.clear()
    return items


class Projector:
    """The twin projector; ``run()`` until the shutdown is requested."""

    def __init__(
        self,
        settings: Settings,
        shutdown: Shutdown | None = None,
        collection: str | None = None,
        **consumer_overrides: Any,
    ) -> None:
        self.settings = settings
        self.shutdown = shutdown or Shutdown()
        database = clients.mongo_database(settings)
        self.collection = store.twins_collection(database, collection or settings.twin.collection)
        self.codecs = codecs_for(settings)
        self.consumer_overrides = consumer_overrides
        self.applied = Applied()
        self._assigned: set[tuple[str, int]] = set()
        self._next: dict[tuple[str, int], int] = {}  # next offset per partition, for lag
        self._lag_checked = 0.0
        # Twin-change events (twin/changes.py): produced after each write, confirmed before
        # the batch's offsets are committed.
        self.changes = ChangeEmitter(settings) if settings.twin.emit_changes else None
        # Events asked of the next poll. Starts small (the first batch of a new fleet is all
        # new twins) and adapts so a batch takes about `batch_seconds`: big batches give each
        # car many events per write, and a batch must end well within max.poll.interval.ms.
        self.limit = min(settings.twin.batch_size, INITIAL_LIMIT)
        self.transactions = False
        self.cache = TwinCache(settings.twin.cache_mb * 2**20, self.collection.codec_options)

    # --- retries -------------------------------------------------------------------------

    def _retry(
        self, what: str, server: str, away: Callable[[BaseException], bool], call: Callable[[], T]
    ) -> T:
        """Call until it works, backing off while the server is away, or shutdown is asked."""

        def before_sleep(state: Any) -> None:
            metrics.RETRIES.labels(server).inc()
            log.warning(
                "server away, retrying",
                server=server,
                what=what,
                attempt=state.attempt_number,
                wait=round(state.next_action.sleep, 2) if state.next_action else None,
                error=str(state.outcome.exception()) if state.outcome else None,
            )

        retrying = Retrying(
            retry=retry_if_exception(away),
            wait=wait_exponential(multiplier=0.2, max=self.settings.twin.max_backoff),
            stop=lambda _state: self.shutdown.requested,
            sleep=self._pause,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(call)

    def _pause(self, seconds: float) -> None:
        self.shutdown.wait(seconds)  # wakes early on shutdown; `stop` then ends the retries

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> Applied:
        twin = self.settings.twin
        self._retry(
            "create indexes",
            "mongodb",
            mongo_is_away,
            lambda: store.ensure_indexes(self.collection),
        )
        self.transactions = twin.transactions and self._retry(
            "probe transactions",
            "mongodb",
            mongo_is_away,
            lambda: store.supports_transactions(self.collection),
        )
        # A batch may take minutes when the projector is far behind (the server's cost is per
        # car written, so a batch that touches every car costs about the same whatever its
        # size): give it room, while heartbeats (session.timeout.ms) still detect a dead one.
        config = {"max.poll.interval.ms": MAX_POLL_INTERVAL_MS} | self.consumer_overrides
        consumer = clients.kafka_consumer(self.settings, self.settings.groups.twin, **config)
        consumer.subscribe(
            list(self.codecs),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info(
            "projecting",
            topics=list(self.codecs),
            collection=self.collection.name,
            group=self.settings.groups.twin,
            transactions=self.transactions,
        )
        try:
            while not self.shutdown.requested:
                batch = poll(consumer, self.limit, twin.poll_timeout)
                if batch:
                    try:
                        started = time.perf_counter()
                        self.process(consumer, batch)
                        self.adapt(len(batch), time.perf_counter() - started)
                    except (ConnectionFailure, OperationFailure, KafkaException, TimeoutError):
                        if not self.shutdown.requested:
                            raise
                        log.warning("stopping with a batch unwritten; it will be redelivered")
                        break
                self._report_lag(consumer)
        finally:
            consumer.close()
            if self.changes is not None:
                self.changes.close()
            log.info("stopped", **vars(self.applied))
        return self.applied

    def adapt(self, events: int, seconds: float) -> None:
        twin = self.settings.twin
        self.limit = next_limit(self.limit, events, seconds, twin.batch_size, twin.batch_seconds)
        metrics.BATCH_LIMIT.set(self.limit)

    def process(self, consumer: Consumer, messages: Sequence[Raw]) -> None:
        """Apply one polled batch, a chunk of cars at a time, then commit its offsets.

        Messages stay undecoded until their car's chunk comes up, so memory is bounded by the
        batch's bytes and one chunk of twins, not by the size of the fleet.
        """
        metrics.BATCH_SIZE.observe(len(messages))
        started = time.perf_counter()
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            offsets[(message.topic, message.partition)] = message.offset
        written = 0
        twin = self.settings.twin
        for selected in chunks_by_car(messages, twin.write_chunk):
            events, _offsets = self.decode(selected)
            grouped = by_car(events)
            cars: list[Written] = []
            applied = self._retry(
                "write twins",
                "mongodb",
                mongo_is_away,
                lambda grouped=grouped, cars=cars: apply_batch(  # type: ignore[misc]
                    self.collection,
                    grouped,
                    twin.history_size,
                    written=_cleared(cars),
                    transaction=self.transactions,
                    cache=self.cache,
                ),
            )
            if self.changes is not None:
                self.changes.emit(cars)
            written += applied.cars_written
            metrics.EVENTS.labels("applied").inc(applied.events - applied.late - applied.duplicates)
            metrics.EVENTS.labels("late").inc(applied.late)
            metrics.EVENTS.labels("duplicate").inc(applied.duplicates)
            metrics.EVENTS.labels("redelivered").inc(applied.redelivered)
            metrics.CONFLICTS.inc(applied.conflicts)
            self.applied += applied
        metrics.CACHE_READS.labels("hit").inc(self.cache.hits)
        metrics.CACHE_READS.labels("miss").inc(self.cache.misses)
        self.cache.hits = self.cache.misses = 0
        metrics.CACHE_BYTES.set(self.cache.bytes)
        metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_CARS.observe(written)
        if self.changes is not None:
            self._retry(
                "confirm twin-change events",
                "kafka",
                lambda exc: isinstance(exc, TimeoutError),
                self.changes.flush,
            )
        self.commit(consumer, offsets)

    def decode(self, messages: Sequence[Raw]) -> tuple[list[Envelope], dict[tuple[str, int], int]]:
        events, offsets, undecodable = decode_messages(messages, self.codecs)
        metrics.EVENTS.labels("undecodable").inc(undecodable)
        return events, offsets

    def commit(self, consumer: Consumer, offsets: dict[tuple[str, int], int]) -> None:
        """Commit after the write; a commit that fails only costs a harmless redelivery."""
        if not offsets:
            return
        partitions = [TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()]
        try:
            self._retry(
                "commit offsets",
                "kafka",
                kafka_is_away,
                lambda: consumer.commit(offsets=partitions, asynchronous=False),
            )
        except KafkaException as exc:
            # The twins already hold these positions, so a lost commit only costs a harmless
            # redelivery: never crash for it (e.g. a batch that outlasted max.poll.interval.ms
            # and whose member was dropped from the group: GROUP_ID_NOT_FOUND).
            level = log.info if exc.args[0].code() in GROUP_MOVED else log.warning
            level("commit failed; these events will be redelivered and skipped", reason=str(exc))
        for (t, p), o in offsets.items():
            self._next[(t, p)] = o + 1

    # --- partitions and lag ----------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Cars may have been written elsewhere while their partitions were not ours: safe
        # anyway (guarded writes), but a stale copy costs a failed write and a re-read.
        self.cache.clear()
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        log.info("assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.discard((tp.topic, tp.partition))
            self._next.pop((tp.topic, tp.partition), None)
            with contextlib.suppress(KeyError):  # never reported
                metrics.LAG.remove(tp.topic, str(tp.partition))
        log.info("revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _report_lag(self, consumer: Consumer, every: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._lag_checked < every:
            return
        self._lag_checked = now
        for topic, partition in list(self._assigned):
            # The high watermark as the last fetch response told it: no broker round trip.
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high < 0:
                continue  # nothing fetched yet
            position = self._next.get((topic, partition))
            if position is None:
                (where,) = consumer.position([TopicPartition(topic, partition)])
                position = where.offset if where.offset >= 0 else low
            metrics.LAG.labels(topic, str(partition)).set(max(0, high - position))
