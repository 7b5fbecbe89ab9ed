"""The history projection: every reading and score in a time-series collection, exactly once."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fleet import clients
from fleet.settings import Settings
from fleet.waiting import wait_for
from tests.twin.factories import T0, reading, score
from tests.twin.kafka_helpers import cli_env, produce, running_history, with_twin
from twin.history import (
    BATCH_EVENTS,
    car_history,
    ensure_collections,
    positions_collection,
    to_document,
)
from twin.project import Raw

FLEET = str(Path(sys.executable).parent / "fleet")


def test_a_reading_and_a_score_become_documents_with_their_kafka_position() -> None:
    where = Raw("fleet.telemetry.v1", 2, 41, b"car1", b"")
    doc = to_document("reading", reading("car1", seq=3, speed=12.5), where)
    assert doc["t"] == dt.datetime.fromtimestamp((T0 + 30_000) / 1000, dt.UTC)
    assert (doc["car"], doc["kind"], doc["seq"], doc["speed"]) == ("car1", "reading", 3, 12.5)
    assert (doc["topic"], doc["partition"], doc["offset"]) == ("fleet.telemetry.v1", 2, 41)
    assert "failure_modes" not in doc
    scored = to_document("score", score("car1", seq=3, value=0.9), where)
    assert (scored["kind"], scored["score"], scored["is_anomaly"]) == ("score", 0.9, True)
    assert scored["model"] == "autoencoder:1"
    assert scored["top_sensors"] == ["coolant_temp"]


@pytest.fixture
def keep_all(fresh_settings: Settings) -> Settings:
    """The test's own settings with a history kept forever: the factories' readings are of
    2023, which a 7-day retention would let the server's TTL monitor remove mid-test."""
    return with_twin(fresh_settings, history_retention_days=0)


def history(settings: Settings) -> Any:
    return clients.mongo_database(settings)[settings.twin.history_collection]


def positions(settings: Settings) -> list[tuple[str, int, int]]:
    return [
        (d["topic"], d["partition"], d["offset"])
        for d in history(settings).find({}, {"topic": 1, "partition": 1, "offset": 1})
    ]


def recorded(settings: Settings) -> int:
    """Events the service has recorded as written (its positions), over all partitions."""
    database = clients.mongo_database(settings)
    return sum(
        p["next"] for p in positions_collection(database, settings.twin.history_collection).find()
    )


@pytest.mark.integration
def test_readings_and_scores_land_once_each_and_read_back_per_car_in_order(
    keep_all: Settings,
) -> None:
    readings = [reading(f"car{i % 5}", seq=i // 5) for i in range(500)]
    scores = [score(f"car{i % 5}", seq=i // 5, value=0.1 + (i % 2)) for i in range(100)]
    produce(keep_all, readings)
    produce(keep_all, scores)
    with running_history(keep_all):
        wait_for(lambda: history(keep_all).count_documents({}) >= 600, 60, "600 events")
        # A batch delivered again (as after a failed commit) adds nothing.
        produce(keep_all, readings[:10])
        wait_for(lambda: history(keep_all).count_documents({}) >= 610, 60, "610 events")
    assert len(positions(keep_all)) == 610
    database = clients.mongo_database(keep_all)
    rows = car_history(
        database,
        keep_all.twin.history_collection,
        "car1",
        dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    )
    kinds = Counter(r["kind"] for r in rows)
    assert kinds == {"reading": 100 + 2, "score": 20}  # car1's 100 readings and its 2 repeats
    times = [r["t"] for r in rows]
    assert times == sorted(times)
    recent = car_history(
        database,
        keep_all.twin.history_collection,
        "car1",
        dt.datetime.fromtimestamp((T0 + 90 * 10_000) / 1000, dt.UTC),
        kinds=("reading",),
    )
    assert [r["seq"] for r in recent] == list(range(90, 100))


@pytest.mark.integration
def test_what_a_crashed_insert_left_is_removed_before_its_events_come_again(
    keep_all: Settings,
) -> None:
    """A process killed after its insert but before recording the position: its documents
    are in the collection, its offsets are not committed. The next start writes each event
    exactly once (checked on the raw collection, not through the deduplicating reader)."""
    readings = [reading(f"car{i % 3}", seq=i // 3) for i in range(300)]
    produce(keep_all, readings, partition=0)
    database = clients.mongo_database(keep_all)
    name = keep_all.twin.history_collection
    ensure_collections(database, name, 0)
    orphaned = [
        to_document("reading", r, Raw(keep_all.topics.telemetry, 0, offset, b"", b""))
        for offset, r in enumerate(readings[:120])
    ]
    database[name].insert_many(orphaned)
    with running_history(keep_all):
        wait_for(lambda: history(keep_all).count_documents({}) >= 300, 60, "300 events")
    found = positions(keep_all)
    assert len(found) == len(set(found)) == 300


@pytest.mark.integration
def test_retention_is_set_on_the_time_series_collection(fresh_settings: Settings) -> None:
    database = clients.mongo_database(fresh_settings)
    ensure_collections(database, "kept_a_week", 7)
    ensure_collections(database, "kept_forever", 0)
    options = {
        c["name"]: c["options"]
        for c in database.list_collections()
        if c["name"].startswith("kept_")
    }
    assert options["kept_a_week"]["expireAfterSeconds"] == 7 * 86_400
    assert options["kept_a_week"]["timeseries"]["metaField"] == "car"
    assert "expireAfterSeconds" not in options["kept_forever"]


@pytest.mark.integration
def test_kill_9_and_restart_show_no_reading_twice(
    keep_all: Settings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    # Several of the projection's batches (twin.history.BATCH_EVENTS each), so that a kill
    # after the first insert lands mid-way: with one batch, everything was in at once.
    total = 3 * BATCH_EVENTS
    produce(keep_all, [reading(f"car{i % 100}", seq=i // 100) for i in range(total)])
    env = cli_env(stack_env, keep_all) | {"FLEET_TWIN_HISTORY_RETENTION_DAYS": "0"}
    log = (tmp_path / "history.log").open("w")
    service = subprocess.Popen([FLEET, "history", "run"], env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: history(keep_all).count_documents({}) > 0, 60, "a first insert")
        service.send_signal(signal.SIGKILL)
        service.wait(10)
        assert history(keep_all).count_documents({}) < total  # it died mid-way
        service = subprocess.Popen([FLEET, "run", "history"], env=env, stdout=log, stderr=log)
        wait_for(lambda: recorded(keep_all) == total, 120, "every position recorded", interval=0.5)
        service.send_signal(signal.SIGTERM)
        assert service.wait(30) == 0
    finally:
        if service.poll() is None:
            service.kill()
        log.close()
    found = positions(keep_all)
    assert len(found) == len(set(found)) == total
    database = clients.mongo_database(keep_all)
    rows = car_history(
        database,
        keep_all.twin.history_collection,
        "car7",
        dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    )
    assert [r["seq"] for r in rows] == list(range(total // 100))


@pytest.mark.integration
def test_fleet_twin_history_prints_a_cars_recent_readings(
    fresh_settings: Settings, stack_env: dict[str, str]
) -> None:
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    produce(
        fresh_settings,
        [
            reading("car42", seq=i, event_time=now_ms - (20 - i) * 60_000 + 30_000, speed=float(i))
            for i in range(20)
        ],
    )
    with running_history(fresh_settings):
        wait_for(lambda: history(fresh_settings).count_documents({}) >= 20, 60, "20 readings")
    env = cli_env(stack_env, fresh_settings)
    result = subprocess.run(
        [FLEET, "twin", "history", "car42", "--since", "10m", "--sensors", "speed"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "10 readings, 0 scores" in result.stdout  # the last 10 minutes of 20
    bad = subprocess.run(
        [FLEET, "twin", "history", "car42", "--since", "yesterday"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert "not a span" in bad.stderr
