"""Fixtures of the lake's integration tests: a bucket of their own, small rotation limits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from fleet import clients
from fleet.service import Shutdown
from fleet.settings import Settings
from fleet.waiting import wait_for
from lake.archiver import Archiver
from tests.kafka import produce  # noqa: F401  (re-exported for the lake's tests)
from tests.threads import running_in_thread

FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


@pytest.fixture
def lake_settings(fresh_settings: Settings) -> Settings:
    """This test's topics and group, its own bucket, and limits small enough to see rotation."""
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    clients.gcs_client(fresh_settings).create_bucket(bucket)
    gcs = fresh_settings.gcs.model_copy(update={"bucket": bucket})
    lake = fresh_settings.lake.model_copy(
        update={"flush_seconds": 0.5, "retry_max_seconds": 1.0, "batch_size": 2000}
    )
    return fresh_settings.model_copy(update={"gcs": gcs, "lake": lake})


def with_lake(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"lake": settings.lake.model_copy(update=changes)})


def end_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    """The end of each partition (retrying while a new topic's leaders are being elected)."""
    consumer = clients.kafka_consumer(settings, f"probe-{uuid.uuid4().hex[:6]}")

    def ends() -> dict[int, int]:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }

    try:
        return wait_for(lambda: ends() or None, 30, f"end offsets of {topic}")  # type: ignore[return-value]
    finally:
        consumer.close()


def committed(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    consumer = clients.kafka_consumer(settings, settings.groups.lake)
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in tps}
    finally:
        consumer.close()


@contextmanager
def archiving(settings: Settings) -> Iterator[Archiver]:
    """The archiver in a thread of this process; stopped (cleanly) on exit."""
    shutdown = Shutdown()
    archiver = Archiver(settings, shutdown, **FAST_GROUP)
    with running_in_thread("archiver", archiver.run, shutdown):
        yield archiver
