"""Read a bounded, reproducible slice of telemetry from Kafka with tensorflow-io.

The slice is an event-time range ``[start_ms, end_ms)`` over every partition of the telemetry
topic. The log is kept forever, so the same range reads the same readings again; duplicates
(one reading delivered twice upstream) are dropped by (car id, seq). Before reading, the
partitions' offsets are recorded, and the read must reach them: tensorflow-io ends silently
with 0 messages when the broker is away, so a short read fails loudly instead.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaException, TopicPartition
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from fleet import clients
from fleet.bulk_avro import TelemetryBatchDecoder
from fleet.logs import get_logger
from fleet.settings import Settings

log = get_logger("ml.kafka_source")


class ShortReadError(RuntimeError):
    """tensorflow-io delivered fewer messages than the topic held when the read began."""


@dataclass
class SliceInfo:
    """What a model was trained on: enough to read exactly the same readings again."""

    topic: str
    start_ms: int | None
    end_ms: int | None
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> [low, high)
    messages_read: int = 0
    undecodable: int = 0
    duplicates: int = 0
    readings: int = 0
    first_event_ms: int | None = None
    last_event_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["offsets"] = {str(p): list(r) for p, r in self.offsets.items()}
        return data


@retry(
    retry=retry_if_exception_type(KafkaException),
    stop=stop_after_attempt(5),
    wait=wait_exponential(0.2, max=3),
    reraise=True,
)
def partition_offsets(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """Low and high watermarks of every partition of ``topic`` (retried: a new topic's
    leaders may still be moving)."""
    consumer = clients.kafka_consumer(settings, f"{settings.groups.scorer}-watermarks")
    try:
        meta = consumer.list_topics(topic, timeout=15)
        partitions = meta.topics[topic].partitions
        if not partitions:
            raise ShortReadError(f"topic {topic} has no partitions (does it exist?)")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            for p in sorted(partitions)
        }
    finally:
        consumer.close()


def recent_offsets(
    settings: Settings, topic: str, offsets: dict[int, tuple[int, int]], hours: float
) -> dict[int, tuple[int, int]]:
    """Each partition's ``(first offset of the topic's last hours, high)`` by Kafka timestamp
    (the producer's send time): the newest message's less ``hours``, looked up with
    offsets_for_times, so a calibration reads the recent end of the topic instead of all of
    it. Event time is cut after decoding, as before: a live fleet's send time runs with its
    event time (a time-lapsed one's slower, so the window holds more), and a replay produced
    at once falls inside."""
    consumer = clients.kafka_consumer(settings, f"fleet-ml-seek-{uuid.uuid4().hex[:12]}")
    try:
        newest = _newest_timestamps(consumer, topic, offsets)
        # From the topic's newest message: a partition whose cars went quiet has no recent
        # hours of its own to read.
        since = max(newest.values(), default=0) - int(hours * 3_600_000)
        wanted = [TopicPartition(topic, p, since) for p in newest]
        found = consumer.offsets_for_times(wanted, timeout=15) if wanted else []
        out = dict(offsets)
        for tp in found:
            low, high = offsets[tp.partition]
            out[tp.partition] = (max(low, tp.offset) if tp.offset >= 0 else high, high)
        return out
    finally:
        consumer.close()


def _newest_timestamps(
    consumer: Any, topic: str, offsets: dict[int, tuple[int, int]], timeout_s: float = 30.0
) -> dict[int, int]:
    """The timestamp of each non-empty partition's newest message (now, for a partition whose
    last offset holds no message to read, e.g. a transaction marker)."""
    last = {p: high - 1 for p, (low, high) in offsets.items() if high > low}
    consumer.incremental_assign([TopicPartition(topic, p, o) for p, o in last.items()])
    out: dict[int, int] = {}
    deadline = time.monotonic() + timeout_s
    while len(out) < len(last) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            out[message.partition()] = message.timestamp()[1]
            consumer.incremental_unassign([TopicPartition(topic, message.partition())])
    now = int(time.time() * 1000)
    return {p: out.get(p, now) for p in last}


def tfio_messages(
    settings: Settings,
    topic: str,
    group_id: str,
    stream_timeout_ms: int = 10_000,
) -> Any:
    """A tf.data dataset of raw message bytes from every partition of ``topic``.

    Built like ``tfio.experimental.streaming.KafkaGroupIODataset`` but with its own
    ``shared_name``: two of those in one process otherwise share one consumer resource and the
    second silently reads nothing.
    """
    import tensorflow as tf
    from tensorflow_io.python.ops import core_ops

    config = [
        f"bootstrap.servers={settings.kafka_bootstrap}",
        f"group.id={group_id}",
        "enable.auto.commit=false",
        "session.timeout.ms=6000",
        "conf.topic.auto.offset.reset=earliest",
    ]
    kafka = settings.kafka
    config.append(f"security.protocol={kafka.security_protocol}")
    if kafka.sasl_mechanism:
        config.append(f"sasl.mechanism={kafka.sasl_mechanism}")
    if kafka.sasl_username:
        config.append(f"sasl.username={kafka.sasl_username}")
    if kafka.sasl_password:
        config.append(f"sasl.password={kafka.sasl_password.get_secret_value()}")
    config += [f"{k}={v}" for k, v in kafka.extra.items()]
    poll_ms = 1000
    resource = core_ops.io_kafka_group_readable_init(
        topics=[topic], metadata=config, shared_name=f"fleet-{uuid.uuid4().hex}"
    )
    dataset = tf.data.experimental.Counter().map(
        lambda i: core_ops.io_kafka_group_readable_next(
            input=resource,
            index=i,
            message_poll_timeout=poll_ms,
            stream_timeout=max(stream_timeout_ms, poll_ms),
        )
    )
    dataset = dataset.apply(tf.data.experimental.take_while(lambda v: v.continue_fetch > 0))
    # Each step yields a (possibly empty) batch of messages; keep them batched for speed.
    return dataset.map(lambda v: v.message)


def start_group_at(
    settings: Settings, group: str, topic: str, offsets: dict[int, tuple[int, int]]
) -> None:
    """Commit each partition's start offset for ``group`` before tensorflow-io joins it.

    tensorflow-io 0.37 bundles librdkafka 1.5, which looks up "earliest" with ListOffsets v0;
    Kafka 4 removed that version, so a group without committed offsets waits forever. With
    committed offsets it fetches straight away.
    """
    consumer = clients.kafka_consumer(settings, group)
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, low) for p, (low, _high) in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def read_messages(
    settings: Settings,
    topic: str,
    offsets: dict[int, tuple[int, int]],
    stream_timeout_ms: int = 10_000,
) -> list[bytes]:
    """Every message of ``topic`` (all partitions) from ``offsets``' low marks, via tfio,
    until the stream goes quiet for ``stream_timeout_ms`` (a topic being written to never
    does: read those with ``read_until_high``)."""
    group = f"fleet-ml-train-{uuid.uuid4().hex[:12]}"  # a fresh group, so nothing is shared
    start_group_at(settings, group, topic, offsets)
    dataset = tfio_messages(settings, topic, group, stream_timeout_ms)
    out: list[bytes] = []
    for chunk in dataset.as_numpy_iterator():
        out.extend(chunk.tolist())
    return out


def read_until_high(
    settings: Settings, topic: str, offsets: dict[int, tuple[int, int]], timeout_s: float
) -> list[bytes]:
    """The messages of ``topic`` between each partition's ``(low, high)`` offsets, with a
    plain consumer that stops at the high marks: it ends on a live topic too (a calibration
    while the fleet sends), where tensorflow-io's stream, which ends when the topic goes quiet,
    would read on forever (one of its reads returns only after a poll comes back empty).
    Stops after ``timeout_s`` whatever it has (the caller checks the count)."""
    consumer = clients.kafka_consumer(settings, f"fleet-ml-read-{uuid.uuid4().hex[:12]}")
    left = {p: high for p, (low, high) in offsets.items() if high > low}
    consumer.assign([TopicPartition(topic, p, offsets[p][0]) for p in left])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while left and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=1.0):
                partition, offset, value = message.partition(), message.offset(), message.value()
                if message.error() is not None or partition is None or offset is None:
                    continue
                if value is not None and offset < left.get(partition, -1):
                    out.append(value)
            # Positions, not the last message seen: a partition may end in a control record.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(left)]):
                if tp.offset >= left[tp.partition]:
                    del left[tp.partition]
    finally:
        consumer.close()
    return out


def decode_slice(
    messages: list[bytes], start_ms: int | None, end_ms: int | None
) -> tuple[dict[str, npt.NDArray[Any]], int, int]:
    """Decode in bulk, keep the event-time range, drop duplicates (same car and seq, first
    kept); (columns, undecodable, duplicates)."""
    batch = TelemetryBatchDecoder().decode(messages)
    columns = batch.columns
    times = columns["event_time"]
    keep = np.ones(len(times), bool)
    if start_ms is not None:
        keep &= times >= start_ms
    if end_ms is not None:
        keep &= times < end_ms
    inside = np.flatnonzero(keep)
    keys = np.rec.fromarrays([columns["car_id"][inside].astype(str), columns["seq"][inside]])
    _, first = np.unique(keys, return_index=True)
    chosen = inside[np.sort(first)]
    duplicates = len(inside) - len(chosen)
    return {k: v[chosen] for k, v in columns.items()}, len(batch.errors), duplicates


def read_slice(
    settings: Settings,
    start_ms: int | None = None,
    end_ms: int | None = None,
    stream_timeout_ms: int = 10_000,
    recent_hours: float | None = None,
) -> tuple[dict[str, npt.NDArray[Any]], SliceInfo]:
    """The readings of the telemetry topic with event time in ``[start_ms, end_ms)``; with
    ``recent_hours``, of its last hours by Kafka timestamp only (``recent_offsets``)."""
    topic = settings.topics.telemetry
    offsets = partition_offsets(settings, topic)
    if recent_hours is not None:
        offsets = recent_offsets(settings, topic, offsets, recent_hours)
    expected = sum(high - low for low, high in offsets.values())
    if recent_hours is not None:  # the live fleet's recent hours: the topic grows meanwhile
        messages = read_until_high(settings, topic, offsets, 10 * stream_timeout_ms / 1000)
    else:
        messages = read_messages(settings, topic, offsets, stream_timeout_ms)
    log.info("read from kafka", topic=topic, messages=len(messages), expected=expected)
    if len(messages) < expected or expected == 0:
        raise ShortReadError(
            f"read {len(messages)} messages from {topic}, but its partitions held "
            f"{expected} when the read began (broker unreachable, or stream timeout too short?)"
        )
    columns, undecodable, duplicates = decode_slice(messages, start_ms, end_ms)
    times = columns["event_time"]
    info = SliceInfo(
        topic=topic,
        start_ms=start_ms,
        end_ms=end_ms,
        offsets=offsets,
        messages_read=len(messages),
        undecodable=undecodable,
        duplicates=duplicates,
        readings=len(times),
        first_event_ms=int(times.min()) if len(times) else None,
        last_event_ms=int(times.max()) if len(times) else None,
    )
    if not len(times):
        raise ShortReadError(f"no readings in {topic} with event time in [{start_ms}, {end_ms})")
    return columns, info


def sorted_by_time(columns: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """Columns ordered by (event time, car id): reading order no longer depends on partitions."""
    order = np.lexsort((columns["car_id"].astype(str), columns["event_time"]))
    return {name: values[order] for name, values in columns.items()}
