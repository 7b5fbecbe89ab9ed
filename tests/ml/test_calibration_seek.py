"""Calibration on promotion reads the recent end of the telemetry topic (real Kafka): each
partition from its newest message's Kafka timestamp less ``ml.calibration_hours``, found with
offsets_for_times, not the whole topic."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fleet import clients
from fleet.avro import telemetry_codec
from fleet.settings import Settings
from ml import simdata
from ml.kafka_source import partition_offsets, read_slice, recent_offsets

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def produce_at(settings: Settings, records: list[dict[str, Any]], append_ms: int) -> None:
    """Records keyed by car id, with their Kafka timestamp set to ``append_ms``."""
    producer = clients.kafka_producer(settings)
    codec = telemetry_codec()
    for record, value in zip(records, codec.encode_many(records), strict=True):
        producer.produce(
            settings.topics.telemetry,
            key=record["car_id"].encode(),
            value=value,
            timestamp=append_ms,
        )
    assert producer.flush(30) == 0


def test_a_calibration_reads_only_the_recent_hours(fresh_settings: Settings) -> None:
    settings = fresh_settings
    old = simdata.simulated_records(cars=6, steps=5, seed=3, first_car=1)
    new = simdata.simulated_records(cars=6, steps=5, seed=4, first_car=101)
    now = int(time.time() * 1000)
    produce_at(settings, old, now - 5 * HOUR_MS)  # sent five hours before the rest
    produce_at(settings, new, now)
    topic = settings.topics.telemetry
    offsets = partition_offsets(settings, topic)
    recent = recent_offsets(settings, topic, offsets, hours=2.0)
    # Each partition starts after its old messages: exactly the new ones are in the window.
    assert sum(high - low for low, high in recent.values()) == len(new)
    assert all(low >= offsets[p][0] for p, (low, _high) in recent.items())
    columns, info = read_slice(settings, stream_timeout_ms=3000, recent_hours=2.0)
    assert sorted(set(columns["car_id"])) == sorted({r["car_id"] for r in new})
    assert info.readings == len(new)
    # Without the window the whole topic is read.
    everything, _ = read_slice(settings, stream_timeout_ms=3000)
    assert len(everything["car_id"]) == len(old) + len(new)


def test_a_read_ends_while_the_fleet_keeps_sending(fresh_settings: Settings) -> None:
    """A calibration on promotion reads a live topic: it stops at the messages the topic held
    when it began, not when the stream goes quiet (which a live fleet never does)."""
    settings = fresh_settings
    before = simdata.simulated_records(cars=6, steps=5, seed=3, first_car=1)
    produce_at(settings, before, int(time.time() * 1000))
    stop = threading.Event()

    def keep_sending() -> None:
        seed = 10
        while not stop.is_set():
            more = simdata.simulated_records(cars=3, steps=1, seed=seed, first_car=1000 + seed)
            produce_at(settings, more, int(time.time() * 1000))
            seed += 1
            stop.wait(0.2)  # a fleet's pace, well inside the stream timeout below

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    result: list[Any] = []
    try:
        reader = threading.Thread(
            target=lambda: result.append(
                read_slice(settings, stream_timeout_ms=5000, recent_hours=1.0)
            ),
            daemon=True,
        )
        reader.start()
        reader.join(120)
        assert not reader.is_alive(), "the read never ended on a live topic"
    finally:
        stop.set()
        sender.join(30)
    _columns, info = result[0]
    assert info.readings >= len(before)
