"""Event totals and consumer lag, read from Kafka's own bookkeeping (read-only).

The events on a topic are the sum of its partitions' high watermarks minus their low ones; a
consumer group's lag is how far its committed offsets trail the high watermarks. Nothing here
joins a group or commits: a consumer that never subscribes only asks the broker questions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from fleet import clients
from fleet.avro import telemetry_codec
from fleet.settings import Settings

TIMEOUT_S = 3.0


@dataclass(frozen=True)
class TopicStats:
    topic: str
    events: int  # events currently held (high - low watermarks)
    end_offsets: int  # sum of high watermarks: grows by one per event ever written
    lag: int | None  # events the group has not committed yet; None if it never committed
    newest_ms: int | None = None  # event time of the newest decodable event on the topic


def topic_stats(settings: Settings, topic: str, group: str) -> TopicStats:
    """Raises ``LookupError`` if the topic does not exist, ``KafkaException`` if Kafka is away."""
    probe = _probe(settings)
    try:
        marks = _watermarks(probe, topic)
        events = sum(high - low for low, high in marks.values())
        end = sum(high for _low, high in marks.values())
        newest = newest_event_time(probe, topic, marks)
    finally:
        probe.close()
    try:
        lag = group_lag(settings, topic, group, marks)
    except KafkaException:  # e.g. the group coordinator is still loading: lag unknown
        lag = None
    return TopicStats(topic, events, end, lag, newest)


def _probe(settings: Settings) -> Consumer:
    """A consumer that only asks questions, under a throwaway group id (the group whose lag
    we read is only looked up); it reports a partition's end as an event."""
    return clients.kafka_consumer(
        settings,
        f"fleet-ui-probe-{uuid.uuid4().hex[:8]}",
        **{"socket.timeout.ms": 3000, "enable.partition.eof": True},
    )


def _watermarks(probe: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) watermarks per partition; ``LookupError`` if the topic does not exist."""
    info = probe.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise LookupError(f"topic {topic} does not exist")
    return {
        p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S)
        for p in sorted(info.partitions)
    }


def newest_event_time(
    consumer: Consumer, topic: str, marks: dict[int, tuple[int, int]]
) -> int | None:
    """The largest event time among the last event of each partition (one fetch each): the
    fleet's clock, without scanning the twins. Events that do not decode are skipped."""
    last = [TopicPartition(topic, p, high - 1) for p, (low, high) in marks.items() if high > low]
    if not last:
        return None
    consumer.assign(last)
    codec = telemetry_codec()
    newest: int | None = None
    pending = {tp.partition for tp in last}
    deadline = time.monotonic() + TIMEOUT_S
    while pending and time.monotonic() < deadline:
        for message in consumer.consume(len(pending), timeout=0.5):
            if message.error() is not None:
                continue
            pending.discard(message.partition())
            value = message.value()
            try:
                event_time = int(codec.decode(value or b"")["event_time"])
            except Exception:  # not a telemetry event: it says nothing about time
                continue
            newest = event_time if newest is None else max(newest, event_time)
    return newest


#: Events read at each end of each partition for `sample_keys`.
SAMPLE_PER_END = 100


def sample_keys(settings: Settings, topic: str, per_end: int = SAMPLE_PER_END) -> tuple[str, ...]:
    """Keys (car ids) of the oldest and the newest ``per_end`` events of each partition: a
    sample of the fleet's cars for the fleet table (ui/anchors.py). Both ends, because a
    fleet simulated step by step publishes in car order, so one end alone may hold only the
    cars at one end of the order. Two fetches a partition; empty if Kafka cannot tell."""
    probe = _probe(settings)
    keys: set[str] = set()
    try:
        try:
            marks = _watermarks(probe, topic)
        except LookupError:
            return ()
        for end in ("oldest", "newest"):
            starts = {
                p: low if end == "oldest" else max(low, high - per_end)
                for p, (low, high) in marks.items()
                if high > low
            }
            keys.update(_keys_from(probe, topic, starts, per_end))
    finally:
        probe.close()
    return tuple(sorted(keys))


def _keys_from(consumer: Consumer, topic: str, starts: dict[int, int], count: int) -> set[str]:
    """The keys of up to ``count`` events of each partition from its start offset."""
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    seen = dict.fromkeys(starts, 0)
    keys: set[str] = set()
    deadline = time.monotonic() + TIMEOUT_S
    while seen and time.monotonic() < deadline:
        for message in consumer.consume(count * len(seen), timeout=0.5):
            partition = message.partition() or 0
            error = message.error()
            if partition not in seen:
                continue
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:  # its end (maybe a txn marker)
                    del seen[partition]
                continue
            if message.key():
                keys.add((message.key() or b"").decode("utf-8", "replace"))
            seen[partition] += 1
            if seen[partition] >= count:
                del seen[partition]
    return keys


def group_lag(
    settings: Settings, topic: str, group: str, marks: dict[int, tuple[int, int]]
) -> int | None:
    reader = clients.kafka_consumer(settings, group, **{"socket.timeout.ms": 3000})
    try:
        committed = reader.committed([TopicPartition(topic, p) for p in marks], timeout=TIMEOUT_S)
    finally:
        reader.close()
    if all(tp.offset < 0 for tp in committed):
        return None
    return sum(
        marks[tp.partition][1] - (tp.offset if tp.offset >= 0 else marks[tp.partition][0])
        for tp in committed
    )


__all__ = ["KafkaException", "TopicStats", "topic_stats"]
