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
    recent_keys: tuple[str, ...] = ()  # the keys (car ids) of the last events of each partition


def topic_stats(settings: Settings, topic: str, group: str) -> TopicStats:
    """Raises ``LookupError`` if the topic does not exist, ``KafkaException`` if Kafka is away."""
    # A throwaway group id for this probe; the group whose lag we read is only looked up.
    probe = clients.kafka_consumer(
        settings,
        f"fleet-ui-probe-{uuid.uuid4().hex[:8]}",
        **{"socket.timeout.ms": 3000, "enable.partition.eof": True},
    )
    try:
        metadata = probe.list_topics(topic, timeout=TIMEOUT_S)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise LookupError(f"topic {topic} does not exist")
        partitions = sorted(info.partitions)
        marks = {
            p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S)
            for p in partitions
        }
        events = sum(high - low for low, high in marks.values())
        end = sum(high for _low, high in marks.values())
        newest, keys = newest_events(probe, topic, marks)
    finally:
        probe.close()
    try:
        lag = group_lag(settings, topic, group, marks)
    except KafkaException:  # e.g. the group coordinator is still loading: lag unknown
        lag = None
    return TopicStats(topic, events, end, lag, newest, keys)


#: Events read from the end of each partition: the fleet clock needs the last one; the car ids
#: of the last hundred are a sample of the fleet for the table's first page (ui/anchors.py).
TAIL = 100


def newest_events(
    consumer: Consumer, topic: str, marks: dict[int, tuple[int, int]], tail: int = TAIL
) -> tuple[int | None, tuple[str, ...]]:
    """The largest event time among the last ``tail`` events of each partition (one fetch
    each; the fleet's clock, without scanning the twins; events that do not decode are
    skipped), and those events' keys."""
    starts = [
        TopicPartition(topic, p, max(low, high - tail))
        for p, (low, high) in marks.items()
        if high > low
    ]
    if not starts:
        return None, ()
    consumer.assign(starts)
    codec = telemetry_codec()
    newest: int | None = None
    keys: set[str] = set()
    pending = {tp.partition for tp in starts}
    deadline = time.monotonic() + TIMEOUT_S
    while pending and time.monotonic() < deadline:
        for message in consumer.consume(tail * len(pending), timeout=0.5):
            partition, offset = message.partition() or 0, message.offset() or 0
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:  # the end (maybe a txn marker)
                    pending.discard(partition)
                continue
            if offset >= marks[partition][1] - 1:
                pending.discard(partition)
            if message.key():
                keys.add((message.key() or b"").decode("utf-8", "replace"))
            try:
                event_time = int(codec.decode(message.value() or b"")["event_time"])
            except Exception:  # not a telemetry event: it says nothing about time
                continue
            newest = event_time if newest is None else max(newest, event_time)
    return newest, tuple(sorted(keys))


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
