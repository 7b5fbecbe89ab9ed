"""Helpers of the desired-state tests: the CLI against this test's topics, reading a topic."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from fleet import clients
from fleet.avro import Codec
from fleet.settings import Settings
from tests.twin.kafka_helpers import cli_env

FLEET = Path(sys.executable).with_name("fleet")


def fleet(
    stack_env: dict[str, str], settings: Settings, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run the real `fleet` CLI against this test's topics and database."""
    env = cli_env(stack_env, settings) | {
        "FLEET_TOPICS_COMMANDS": settings.topics.commands,
        "FLEET_TOPICS_TWIN_CHANGES": settings.topics.twin_changes,
        "FLEET_TWIN_COLLECTION": settings.twin.collection,
    }
    return subprocess.run(
        [str(FLEET), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def topic_total(settings: Settings, topic: str) -> int:
    """Messages in a topic (sum of its partitions' high watermarks)."""
    consumer = clients.kafka_consumer(settings, f"count-{uuid.uuid4().hex[:6]}")
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            total += high
        return total
    finally:
        consumer.close()


def read_all(settings: Settings, topic: str, codec: Codec) -> list[dict[str, Any]]:
    """Every record of a topic, partition by partition, in offset order."""
    consumer = clients.kafka_consumer(settings, f"read-{uuid.uuid4().hex[:6]}")
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {}
        for p in partitions:
            _low, ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: dict[int, list[dict[str, Any]]] = {p: [] for p in partitions}
        done = {p: ends[p] == 0 for p in partitions}
        deadline = time.monotonic() + 60
        while not all(done.values()):
            assert time.monotonic() < deadline, f"{topic} not read to its end within 60 s"
            for message in consumer.consume(500, timeout=1):
                if message.error() is not None:
                    continue
                p = message.partition() or 0
                records[p].append(codec.decode(message.value() or b""))
                if (message.offset() or 0) + 1 >= ends[p]:
                    done[p] = True
        return [r for p in partitions for r in records[p]]
    finally:
        consumer.close()
