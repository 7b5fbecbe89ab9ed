"""`fleet twin run`: the projector service.

A thin loop: poll a batch from the telemetry and anomaly topics -> decode it in bulk
(twin/chunk.py) -> fold per car (twin/fold_columns.py) -> one unordered bulk write -> commit
the offsets. Offsets are committed only after the write;
the positions stored on the twins (same document, same write as the state) are the truth
about what was applied, so a redelivery after a crash, a failed commit or a rebalance
changes nothing. MongoDB or Kafka away: retry with backoff until they are back or a
shutdown is requested; never crash-loop.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from pymongo.errors import ConnectionFailure, OperationFailure
from tenacity import Retrying, retry_if_exception, wait_exponential

from fleet import clients
from fleet.avro import Codec, anomaly_codec, command_codec, telemetry_codec
from fleet.logs import get_logger
from fleet.service import Shutdown
from fleet.settings import Settings
from twin import live, metrics, store
from twin.cache import TwinCache
from twin.changes import ChangeEmitter, Written
from twin.chunk import CarEvents, Chunk, ChunkDecoder
from twin.events import Kind
from twin.fold_columns import fold_car, judge_first_readings
from twin.project import Applied, Raw, apply_batch, chunks_by_car, poll
from twin.score_wait import ScoreWait

log = get_logger("twin.projector")
T = TypeVar("T")

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


#: Seconds per twin assumed until a batch has been measured: the slow side of what one twin's
#: read, fold and write cost on a MongoDB-wire server (SecantusDB: 2-8 ms; MongoDB: far less).
FIRST_SECONDS_PER_TWIN = 0.01


@dataclass
class BatchSizer:
    """How many cars the next batch may touch: freshness first when caught up, throughput
    when behind.

    A batch costs one read and one write per car, whatever its number of events (each event
    costs microseconds to decode and fold): so batches are bounded by distinct cars, at the
    seconds per twin measured on the batches so far, and by ``batch_size`` events (memory).
    Caught up (the last poll took everything that was waiting), a batch takes at most what
    can be written within ``max_staleness`` seconds, so a burst cannot hold the newest
    readings back behind a long batch. Behind (the last poll stopped at a bound), it takes
    up to ``batch_seconds``: the more events a car has in a batch, the fewer writes per
    event, and that is how a projector catches up."""

    batch_seconds: float
    max_staleness: float = 1.0
    seconds_per_twin: float = FIRST_SECONDS_PER_TWIN
    behind: bool = True  # until a poll says otherwise: a start is a catch-up

    def max_cars(self) -> int:
        seconds = self.batch_seconds if self.behind else min(self.max_staleness, self.batch_seconds)
        return max(1, int(seconds / self.seconds_per_twin))

    def polled(self, events: int, cars: int, max_events: int, max_cars: int) -> None:
        """What the last poll took: a poll that stopped at a bound left events waiting."""
        self.behind = events >= max_events or cars >= max_cars

    def observe(self, twins: int, seconds: float) -> None:
        if twins < 10 or seconds <= 0:
            return  # too small a batch to say anything
        self.seconds_per_twin = (self.seconds_per_twin + seconds / twins) / 2


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
        self.database = clients.mongo_database(settings)
        # The configured name; the collection behind it is looked up per batch, because
        # `fleet twin rebuild` swaps in a new one (twin/live.py).
        self.name = collection or settings.twin.collection
        self.collection = store.twins_collection(self.database, self.name)
        self.codecs = codecs_for(settings)
        self.chunks = ChunkDecoder(self.codecs)
        self.consumer_overrides = consumer_overrides
        self.applied = Applied()
        self._assigned: set[tuple[str, int]] = set()
        self._next: dict[tuple[str, int], int] = {}  # next offset per partition, for lag
        self._lag_checked = 0.0
        # Twin-change events (twin/changes.py): produced after each write, confirmed before
        # the batch's offsets are committed.
        self.changes = ChangeEmitter(settings) if settings.twin.emit_changes else None
        # Cars per batch: as many as fit in `batch_seconds` (big batches give each car many
        # events per write; a batch must end well within max.poll.interval.ms).
        twin = settings.twin
        self.sizer = BatchSizer(twin.batch_seconds, twin.max_staleness_seconds)
        self.transactions = False
        self.score_wait = ScoreWait(
            settings.topics.telemetry, settings.topics.anomalies, twin.score_wait_seconds
        )
        self.cache = TwinCache(twin.cache_mb * 2**20, self.collection.codec_options)

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
        self._follow_swap()
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
                max_cars = self.sizer.max_cars()
                metrics.BATCH_MAX_CARS.set(max_cars)
                timeout = twin.poll_timeout
                if self.score_wait.held:  # come back in time to let them go
                    timeout = min(timeout, self.score_wait.wait)
                polled = poll(consumer, twin.batch_size, timeout, max_cars)
                if polled:
                    cars = len({raw.key for raw in polled})
                    self.sizer.polled(len(polled), cars, twin.batch_size, max_cars)
                batch = self.score_wait.split(polled, live=not self.sizer.behind)
                if batch:
                    try:
                        started = time.perf_counter()
                        written = self.process(consumer, batch)
                        self.sizer.observe(written, time.perf_counter() - started)
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

    def process(self, consumer: Consumer, messages: Sequence[Raw]) -> int:
        """Apply one polled batch, a chunk of cars at a time, then commit its offsets.
        Returns the number of twins written.

        Messages stay undecoded until their car's chunk comes up, so memory is bounded by the
        batch's bytes and a few chunks of twins, not by the size of the fleet. Chunks hold
        disjoint cars, so `chunks_in_flight` of them are applied at once: while the server
        writes one chunk (this process waits on a socket), the next is decoded and folded
        here, and both cores work. Their results are taken in order.
        """
        metrics.BATCH_SIZE.observe(len(messages))
        started = time.perf_counter()
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            offsets[(message.topic, message.partition)] = message.offset
        for where, first in self.score_wait.first_held().items():
            if where in offsets:  # not past a message still waiting for its score
                offsets[where] = min(offsets[where], first - 1)
        self._follow_swap()
        written = self._apply_chunks(messages)
        # A rebuild that swapped in its collection while this batch was written into the old
        # one replays only what was there before the swap: write the batch again into the new
        # one before committing (events already applied there are no-ops).
        while self._follow_swap():
            log.info("twins swapped during a batch; writing it again", into=self.collection.name)
            written = self._apply_chunks(messages)
        hits, misses = self.cache.take_counts()
        metrics.CACHE_READS.labels("hit").inc(hits)
        metrics.CACHE_READS.labels("miss").inc(misses)
        metrics.CACHE_BYTES.set(self.cache.bytes)
        metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_CARS.observe(written)
        log.debug(
            "batch applied",
            events=len(messages),
            twins_written=written,
            seconds=round(time.perf_counter() - started, 2),
        )
        if self.changes is not None:
            self._retry(
                "confirm twin-change events",
                "kafka",
                lambda exc: isinstance(exc, TimeoutError),
                self.changes.flush,
            )
        self.commit(consumer, offsets)
        return written

    def _apply_chunks(self, messages: Sequence[Raw]) -> int:
        """The batch's cars, a chunk at a time, into the live collection. Returns twins written."""
        depth = self.settings.twin.chunks_in_flight
        in_flight: deque[tuple[Future[Applied], list[Written]]] = deque()
        written = 0
        with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="twin-chunk") as pool:
            try:
                for selected in chunks_by_car(messages, self.settings.twin.write_chunk):
                    while len(in_flight) >= depth:
                        written += self._finish(*in_flight.popleft())
                    chunk = self.decode(selected)
                    cars: list[Written] = []
                    in_flight.append((pool.submit(self._apply, chunk.cars, cars), cars))
                while in_flight:
                    written += self._finish(*in_flight.popleft())
            finally:
                for future, _cars in in_flight:  # a chunk failed: do not start the others
                    future.cancel()
        return written

    def _follow_swap(self) -> bool:
        """Look up the live collection; True if a rebuild swapped in another since last time."""
        name = self._retry(
            "find the live twins",
            "mongodb",
            mongo_is_away,
            lambda: live.live_name(self.database, self.name),
        )
        if name == self.collection.name:
            return False
        self.collection = store.twins_collection(self.database, name)
        self.cache.clear()  # twins of the replaced collection
        return True

    def _apply(self, grouped: dict[str, CarEvents], cars: list[Written]) -> Applied:
        """One chunk of cars: read, fold, one bulk write (retried while MongoDB is away)."""
        twin = self.settings.twin
        return self._retry(
            "write twins",
            "mongodb",
            mongo_is_away,
            lambda: apply_batch(
                self.collection,
                grouped,
                twin.dedupe_window,
                written=_cleared(cars),
                transaction=self.transactions,
                cache=self.cache,
                fold_events=fold_car,
                prepare=judge_first_readings,
            ),
        )

    def _finish(self, future: Future[Applied], cars: list[Written]) -> int:
        """Wait for a chunk; report its twin changes and counts. Returns twins written."""
        applied = future.result()
        if self.changes is not None:
            self.changes.emit(cars)
        metrics.EVENTS.labels("applied").inc(applied.events - applied.late - applied.duplicates)
        metrics.EVENTS.labels("late").inc(applied.late)
        metrics.EVENTS.labels("duplicate").inc(applied.duplicates)
        metrics.EVENTS.labels("redelivered").inc(applied.redelivered)
        metrics.CONFLICTS.inc(applied.conflicts)
        self.applied += applied
        return applied.cars_written

    def decode(self, messages: Sequence[Raw]) -> Chunk:
        """The chunk's events, per car (the batch's offsets are taken from the raw messages)."""
        chunk = self.chunks.decode(messages)
        metrics.EVENTS.labels("undecodable").inc(chunk.undecodable)
        return chunk

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
        self.score_wait.drop((tp.topic, tp.partition) for tp in partitions)
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
