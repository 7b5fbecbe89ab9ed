"""Faults against real servers: kill -9 of `fleet lake run` mid-work, and GCS going away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from fleet.settings import Settings
from fleet.stack import Stack
from fleet.stack.ports import free_port
from fleet.waiting import wait_for
from lake.reader import Lake
from tests.lake.conftest import FAST_GROUP, archiving, committed, end_offsets, produce
from tests.lake.helpers import T0, reading

pytestmark = [pytest.mark.integration, pytest.mark.fault]

FLEET = str(Path(sys.executable).parent / "fleet")


def archiver_env(settings: Settings, stack_env: dict[str, str], **lake: str) -> dict[str, str]:
    """The environment of a `fleet lake run` subprocess on this test's topics and bucket."""
    env = os.environ | stack_env
    env |= {
        "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
        "FLEET_TOPICS_ANOMALIES": settings.topics.anomalies,
        "FLEET_GROUPS_LAKE": settings.groups.lake,
        "FLEET_GCS_BUCKET": settings.gcs.bucket,
        "FLEET_KAFKA_EXTRA": json.dumps({k: str(v) for k, v in FAST_GROUP.items()}),
        "FLEET_LOG_FORMAT": "json",
        "FLEET_LAKE_FLUSH_SECONDS": "0.5",
    }
    env |= {f"FLEET_LAKE_{k.upper()}": v for k, v in lake.items()}
    return env


def test_each_event_exactly_once_after_kill_9_and_restart(
    lake_settings: Settings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    topic, n = lake_settings.topics.telemetry, lake_settings.topics.telemetry_partitions
    first = [reading(i, car=f"car-{i % 11}", event_time=T0 + i * 500) for i in range(20_000)]
    produce(lake_settings, first)
    total_first = sum(end_offsets(lake_settings, topic, n).values())
    env = archiver_env(lake_settings, stack_env, max_records="250", batch_size="250")
    log = (tmp_path / "archiver.log").open("ab")

    one = subprocess.Popen([FLEET, "lake", "run"], env=env, stdout=log, stderr=log)

    def first_commits() -> int:
        if one.poll() is not None:
            raise RuntimeError(f"fleet lake run exited with {one.returncode}; see {log.name}")
        return sum(committed(lake_settings, topic, n).values())

    progress = wait_for(
        first_commits, 90, "the first commits", interval=0.05, fatal=(RuntimeError,)
    )
    one.send_signal(signal.SIGKILL)
    assert one.wait(10) == -signal.SIGKILL
    at_kill = sum(committed(lake_settings, topic, n).values())
    assert 0 < progress <= at_kill < total_first, "the kill should land mid-work"

    second = [
        reading(20_000 + i, car=f"car-{i % 11}", event_time=T0 + (20_000 + i) * 500)
        for i in range(10_000)
    ]
    produce(lake_settings, second)
    ends = end_offsets(lake_settings, topic, n)
    two = subprocess.Popen([FLEET, "lake", "run"], env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: committed(lake_settings, topic, n) == ends, 120, f"commits {ends}")
    finally:
        two.send_signal(signal.SIGTERM)
        assert two.wait(60) == 0, "SIGTERM should stop the archiver cleanly"

    frame = Lake(lake_settings).read_polars(
        "telemetry", columns=["car_id", "seq", "kafka_partition", "kafka_offset"]
    )
    assert frame.height == len(first) + len(second)
    assert frame.select("kafka_partition", "kafka_offset").n_unique() == frame.height
    assert sorted(frame["seq"].to_list()) == list(range(len(first) + len(second)))


def test_gcs_unavailable_then_back_loses_nothing_and_commits_only_after_upload(
    lake_settings: Settings, tmp_path: Path
) -> None:
    """A separate GCS emulator for this test, stopped and started again under the archiver."""
    gcs = lake_settings.gcs.model_copy(update={"port": free_port(), "bucket": "outage-lake"})
    stack = lake_settings.stack.model_copy(update={"home": tmp_path / "gcs-stack"})
    settings = lake_settings.model_copy(update={"gcs": gcs, "stack": stack})
    emulator = Stack(settings, only=["gcs"])
    emulator.up()
    topic, n = settings.topics.telemetry, settings.topics.telemetry_partitions
    try:
        with archiving(settings):
            emulator.down()
            failures_before = REGISTRY.get_sample_value("lake_upload_failures_total") or 0.0
            records = [reading(i, event_time=T0 + i * 1000) for i in range(2000)]
            produce(settings, records)
            wait_for(
                lambda: (
                    (REGISTRY.get_sample_value("lake_upload_failures_total") or 0)
                    > failures_before + 2
                ),
                60,
                "failed upload attempts while GCS is down",
            )
            assert sum(committed(settings, topic, n).values()) == 0  # nothing committed
            emulator.up()
            ends = end_offsets(settings, topic, n)
            wait_for(lambda: committed(settings, topic, n) == ends, 90, "commits after GCS is back")
        frame = Lake(settings).read_polars("telemetry", columns=["seq"])
        assert sorted(frame["seq"].to_list()) == list(range(len(records)))
    finally:
        emulator.down()
