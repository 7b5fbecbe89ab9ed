"""Kill -9 of a real `fleet twin run` mid-work, restart, and rebuilds (while queries run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleet.settings import Settings
from fleet.waiting import wait_for
from tests.twin.factories import reading, score
from tests.twin.kafka_helpers import (
    all_twins,
    events_applied,
    produce,
    running_projector,
    twins_collection,
)
from twin import queries
from twin.rebuild import rebuild

pytestmark = pytest.mark.integration

FLEET = Path(sys.executable).with_name("fleet")


def projector_process(stack_env: dict[str, str], settings: Settings) -> subprocess.Popen[bytes]:
    env = (
        os.environ
        | stack_env
        | {
            "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
            "FLEET_TOPICS_ANOMALIES": settings.topics.anomalies,
            "FLEET_GROUPS_TWIN": settings.groups.twin,
            "FLEET_MONGODB_DATABASE": settings.mongodb.database,
            "FLEET_TWIN_BATCH_SIZE": "60",
            "FLEET_KAFKA_EXTRA": json.dumps({"session.timeout.ms": "6000"}),
            "FLEET_LOG_FORMAT": "json",
        }
    )
    return subprocess.Popen(
        [str(FLEET), "twin", "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


class ProcessDied(AssertionError):
    pass


def applied_more_than(settings: Settings, process: subprocess.Popen[bytes], n: int) -> bool:
    if process.poll() is not None:
        raise ProcessDied(f"fleet twin run exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return events_applied(settings) > n


@pytest.mark.fault
def test_kill_9_mid_work_then_restart_equals_a_clean_rebuild(
    stack_env: dict[str, str], fresh_settings: Settings
) -> None:
    records = [reading(f"car{c}", seq=s) for s in range(30) for c in range(40)]
    records += [reading(f"car{c}", seq=s) for s in (3, 7) for c in range(0, 40, 5)]  # dupes
    scores = [score(f"car{c}", seq=s, value=0.3 * (s % 3)) for s in range(8) for c in range(40)]
    produce(fresh_settings, records)
    produce(fresh_settings, scores)
    total = len(records) + len(scores)

    first = projector_process(stack_env, fresh_settings)
    try:
        wait_for(
            lambda: applied_more_than(fresh_settings, first, total // 4),
            90,
            "a quarter applied",
            fatal=(ProcessDied,),
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert first.returncode == -signal.SIGKILL
    assert events_applied(fresh_settings) < total, "killed too late to prove anything"

    second = projector_process(stack_env, fresh_settings)
    finished = False
    try:
        wait_for(
            lambda: applied_more_than(fresh_settings, second, total - 1),
            120,
            "every event applied",
            fatal=(ProcessDied,),
        )
        finished = True
    finally:
        second.send_signal(signal.SIGTERM)
        _out, err = second.communicate(timeout=60)
        if not finished:
            print(events_applied(fresh_settings), total, err.decode()[-5000:])
    assert second.returncode == 0, err.decode()[-2000:]
    assert b'"stopped"' in err  # the clean-stop log line

    after_crash = all_twins(fresh_settings)
    report = rebuild(fresh_settings)
    assert report.replayed == total
    assert all_twins(fresh_settings) == after_crash
    assert len(after_crash) == 40
    assert sum(t["counters"]["duplicates_skipped"] for t in after_crash.values()) == 16


def test_rebuild_while_queries_and_the_projector_run(fresh_settings: Settings) -> None:
    cars = [f"car{c}" for c in range(40)]
    first = [reading(car, seq=s, tire_pressure_1_1=21) for s in range(20) for car in cars]
    more = [reading(car, seq=s) for s in range(20, 30) for car in cars]
    produce(fresh_settings, first)
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def query_forever() -> None:
        while not stop.is_set():
            try:
                # As `fleet twin get/list` and the explorer do: look the live twins up, query.
                collection = queries.twins(fresh_settings)
                seen.append(queries.count_twins(collection))
                twin = queries.get_twin(collection, "car7")
                assert twin is not None and twin["revision"] >= 20
            except BaseException as exc:
                errors.append(exc)
                return

    with running_projector(fresh_settings):
        wait_for(lambda: events_applied(fresh_settings) == len(first), 60, "first events")
        reader = threading.Thread(target=query_forever, daemon=True)
        reader.start()
        writer = threading.Thread(target=produce, args=(fresh_settings, more), daemon=True)
        writer.start()
        report = rebuild(fresh_settings)
        writer.join(60)
        wait_for(
            lambda: events_applied(fresh_settings) == len(first) + len(more),
            60,
            "events produced during the rebuild on the new twins",
        )
        stop.set()
        reader.join(30)
    assert errors == []
    assert seen and set(seen) == {len(cars)}  # every query saw the whole fleet
    assert report.replayed >= len(first)
    twins = all_twins(fresh_settings)
    assert all(t["last_reading"]["seq"] == 29 for t in twins.values())
    assert all(t["health"]["status"] == "ok" for t in twins.values())  # pressure back to 32
    collection = twins_collection(fresh_settings)
    assert collection.name == report.staging
    names = {i["name"] for i in collection.list_indexes()}
    assert {"condition", "anomalous", "last_seen_car", "firmware", "car_id"} <= names
    # Nothing else left behind: the new twins, and the old ones they replaced, kept for a
    # reader that looked them up just before the swap (the next rebuild drops them).
    assert report.replaced == fresh_settings.twin.collection
    twin_collections = {
        n for n in collection.database.list_collection_names() if n.startswith(report.replaced)
    }
    assert twin_collections == {report.staging, report.replaced}


@pytest.mark.fault
def test_mongodb_away_for_a_while_then_back(fresh_settings: Settings, tmp_path: Path) -> None:
    """The projector's own MongoDB-wire server is killed and restarted: retries, no loss."""
    from prometheus_client import REGISTRY

    from fleet import clients
    from fleet.stack.ports import free_port
    from fleet.stack.services import MongoWire

    settings = fresh_settings.model_copy(
        update={
            "mongodb": fresh_settings.mongodb.model_copy(update={"port": free_port()}),
            "stack": fresh_settings.stack.model_copy(update={"home": tmp_path}),
            "twin": fresh_settings.twin.model_copy(update={"max_backoff": 1.0}),
        }
    )
    # The server the stack runs (secantusd-rs when built), with the stack's flags.
    mongodb = MongoWire(settings)
    mongodb.prepare()
    command = mongodb.command()

    def serving() -> bool:
        with clients.mongo_client(settings, serverSelectionTimeoutMS=500) as client:
            client.admin.command("ping")
        return True

    def retries() -> float:
        return REGISTRY.get_sample_value("fleet_twin_retries_total", {"server": "mongodb"}) or 0.0

    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(serving, 60, "a private MongoDB-wire server")
        first = [reading(f"car{c}", seq=s) for s in range(5) for c in range(10)]
        later = [reading(f"car{c}", seq=s) for s in range(5, 10) for c in range(10)]
        produce(settings, first)
        with running_projector(settings):
            wait_for(lambda: events_applied(settings) == len(first), 60, "first events")
            server.kill()
            server.wait(30)
            before = retries()
            produce(settings, later)
            wait_for(lambda: retries() > before, 60, "the projector retrying")
            server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(serving, 60, "the server back")
            wait_for(
                lambda: events_applied(settings) == len(first) + len(later),
                90,
                "events produced while MongoDB was away",
            )
        twins = all_twins(settings)
        assert len(twins) == 10
        assert all(t["last_reading"]["seq"] == 9 for t in twins.values())
        assert all(t["counters"]["readings_applied"] == 10 for t in twins.values())
    finally:
        server.kill()
        server.wait(30)
