"""Apply a batch of events to the twins: read, fold per car, one bulk write (I/O at the edge).

Shared by the projector service, the rebuild and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, Message
from pymongo.collection import Collection

from fleet.avro import AvroDecodeError, Codec
from fleet.logs import get_logger
from twin import store
from twin.cache import TwinCache
from twin.changes import Written
from twin.events import Envelope, Kind
from twin.fold import FoldResult, Twin, fold

log = get_logger("twin.project")


class Raw(NamedTuple):
    """A consumed message, kept compactly until its car's chunk is decoded: a confluent
    Message pins librdkafka's fetch buffers (~800 bytes a message, measured), this ~300."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


def compact(messages: Iterable[Message], into: list[Raw]) -> None:
    """Append the messages to ``into`` as Raw records; errors are logged and left out."""
    topics: dict[str, str] = {}
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka", error=str(error))
            continue
        topic = str(message.topic())
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # set on every real message
        into.append(
            Raw(
                topics.setdefault(topic, topic),
                partition,
                offset,
                message.key() or b"",
                message.value() or b"",
            )
        )


#: Messages asked of librdkafka at a time while a batch fills.
POLL_PIECE = 10_000
#: How long a piece may take to fill once a batch has begun: more than the time between two
#: fetch responses when catching up, far less than a live stream takes to fill a piece.
PIECE_WAIT = 0.25


def poll(consumer: Consumer, limit: int, timeout: float, max_cars: int | None = None) -> list[Raw]:
    """What is waiting in Kafka, up to ``limit`` messages of about ``max_cars`` cars (checked
    between pieces); waits at most ``timeout`` seconds for the first message.

    A batch takes what is there and ends when a piece comes back short (caught up): a live
    stream is applied as it comes, a backlog in batches as big as the limits allow. Messages
    are made Raw piece by piece, so librdkafka's buffers are freed as we go.
    """
    batch: list[Raw] = []
    first = consumer.consume(num_messages=1, timeout=timeout)
    if not first:
        return batch
    compact(first, batch)
    cars = {raw.key for raw in batch}
    while len(batch) < limit and (max_cars is None or len(cars) < max_cars):
        wanted = min(POLL_PIECE, limit - len(batch))
        messages = consumer.consume(num_messages=wanted, timeout=PIECE_WAIT)
        start = len(batch)
        compact(messages, batch)
        cars.update(raw.key for raw in batch[start:])
        if len(messages) < wanted:
            break
    return batch


def decode_messages(
    messages: Iterable[Raw], codecs: Mapping[str, tuple[Kind, Codec]]
) -> list[Envelope]:
    """Raw messages -> events, one at a time (the reference fold's input).

    An undecodable event is logged and skipped (the bridge validates input, so it is a bug
    upstream); its offset still counts as consumed.
    """
    events: list[Envelope] = []
    for message in messages:
        kind, codec = codecs[message.topic]
        try:
            record = codec.decode(message.value)
        except AvroDecodeError as exc:
            log_undecodable(message, exc)
            continue
        events.append(Envelope(message.topic, message.partition, message.offset, kind, record))
    return events


def log_undecodable(message: Raw, error: AvroDecodeError) -> None:
    log.error(
        "undecodable event skipped",
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        error=str(error),
    )


@dataclass
class Applied:
    events: int = 0
    redelivered: int = 0
    late: int = 0
    duplicates: int = 0
    cars_written: int = 0
    conflicts: int = 0

    def __iadd__(self, other: Applied) -> Applied:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


#: Most events decoded at once (a decoded reading is ~1.2 kB in Python).
CHUNK_EVENTS = 20_000


def chunks_by_car(
    messages: Iterable[Raw], max_cars: int, max_events: int = CHUNK_EVENTS
) -> Iterator[list[Raw]]:
    """A batch's messages cut into chunks of whole cars (Kafka key = car id), in Kafka order
    within each car: at most ``max_cars`` cars, and about ``max_events`` messages (a car is
    never split, so that each car still gets one write per batch)."""
    per_car: dict[bytes, list[Raw]] = {}
    for message in messages:
        per_car.setdefault(message.key, []).append(message)
    chunk: list[Raw] = []
    cars = 0
    for car_messages in per_car.values():
        if chunk and (cars >= max_cars or len(chunk) + len(car_messages) > max_events):
            yield chunk
            chunk, cars = [], 0
        chunk.extend(car_messages)
        cars += 1
    if chunk:
        yield chunk


#: How a car's events are folded into its twin: `fold` over envelopes, or the projector's
#: `fold_columns.fold_car` over a decoded chunk.
Folder = Callable[[Twin | None, str, Any, int], FoldResult]
#: Work on a whole chunk before its cars are folded one by one, given their current twins
#: (`fold_columns.judge_first_readings`).
Prepare = Callable[[Mapping[str, Twin], Mapping[str, Any]], None]


def apply_batch(
    collection: Collection[Twin],
    events_by_car: Mapping[str, Any],
    dedupe_window: int,
    *,
    max_rounds: int = 10,
    written: list[Written] | None = None,
    transaction: bool = False,
    cache: TwinCache | None = None,
    fold_events: Folder = fold,
    prepare: Prepare | None = None,
) -> Applied:
    """Fold each car's events into its twin and write all twins in one unordered bulk write.

    If another writer changed some twins meanwhile (a rebalance), read and fold again: the
    positions on the twins make already-applied events no-ops, so this converges.

    ``written``, if given, receives every car whose twin this call wrote, and every car whose
    events were all applied before (redelivered: its stored twin), for twin-change events.
    ``cache``, if given, is where twins are read first and written twins are remembered.
    ``fold_events`` folds one car's events (of whatever shape ``events_by_car`` holds), after
    ``prepare``, if given, saw them all with their current twins.
    """
    total = Applied()
    pending = events_by_car
    for _ in range(max_rounds):
        current = store.load(collection, pending, cache)
        if prepare is not None:
            prepare(current, pending)
        changes: dict[str, tuple[Twin | None, Twin]] = {}
        replayed: set[str] = set()
        commands: dict[str, list[dict[str, Any]]] = {}
        round_stats = Applied()
        for car_id, events in pending.items():
            before = current.get(car_id)
            result = fold_events(before, car_id, events, dedupe_window)
            if result.commands:
                commands[car_id] = result.commands
            round_stats.redelivered += result.redelivered
            if result.redelivered:
                replayed.add(car_id)
                if result.twin is None and before is not None and written is not None:
                    written.append(Written(car_id, before, before, replayed=True))
            if result.twin is not None:
                changes[car_id] = (before, result.twin)
                round_stats.events += result.applied
                round_stats.late += result.late
                round_stats.duplicates += result.duplicates
        # Outcomes first: if the twin write is lost (a crash, a race), the commands are folded
        # again from the same state and give the same outcomes, written again harmlessly.
        store.write_outcomes(collection, [o for found in commands.values() for o in found])
        encoded: dict[str, bytes] = {}
        lost = store.write(collection, changes, transaction, encoded)
        round_stats.cars_written = len(changes)
        if lost == 0:
            total += round_stats
            _report(written, changes, replayed, set(), commands)
            _remember(cache, encoded, set())
            return total
        # Some writes lost a race and the bulk result does not say which: look, and fold the
        # losers again from what is stored now (their applied events are no-ops there).
        stored = store.load(collection, changes)
        losers = {
            car_id
            for car_id, (_before, after) in changes.items()
            if not store.same_version(stored.get(car_id), after)
        }
        total.conflicts += len(losers)
        round_stats.cars_written -= len(losers)
        for car_id in losers:  # their stats are counted when they are written
            result = fold_events(current.get(car_id), car_id, pending[car_id], dedupe_window)
            round_stats.events -= result.applied
            round_stats.late -= result.late
            round_stats.duplicates -= result.duplicates
            round_stats.redelivered -= result.redelivered
        total += round_stats
        _report(written, changes, replayed, losers, commands)
        _remember(cache, encoded, losers)
        pending = {car_id: pending[car_id] for car_id in losers}
        if not pending:
            return total
    raise RuntimeError(f"twins kept changing under us for {max_rounds} rounds")


def _remember(cache: TwinCache | None, encoded: dict[str, bytes], losers: set[str]) -> None:
    """The written twins (as sent) are the stored ones now; the losers' are someone else's."""
    if cache is None:
        return
    cache.discard(losers)
    for car_id, twin in encoded.items():
        if car_id not in losers:
            cache.put_encoded(car_id, twin)


def _report(
    written: list[Written] | None,
    changes: dict[str, tuple[Twin | None, Twin]],
    replayed: set[str],
    losers: set[str],
    commands: Mapping[str, list[dict[str, Any]]],
) -> None:
    if written is None:
        return
    for car_id, (before, after) in changes.items():
        if car_id not in losers:
            written.append(
                Written(
                    car_id,
                    before,
                    after,
                    replayed=car_id in replayed,
                    commands=tuple(commands.get(car_id, ())),
                )
            )
