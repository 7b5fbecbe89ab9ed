"""End to end: cars publish over MQTT at one end; at the other, every reading is counted on
the twins, the lake holds each event exactly once, the twins carry scores of a model trained
from Kafka, and the explorer shows the fleet. Every service runs as a real `fleet` process.

Counts reconcile: published (PUBACKed) = in Kafka = on the twins = in the lake = scored, and
bad inputs = dead letters.
"""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet import clients
from fleet.settings import Settings
from fleet.stack.ports import free_port
from fleet.waiting import wait_for
from tests.e2e.pipeline import (
    FLEET,
    Cars,
    Gateway,
    Ledger,
    Service,
    bad_inputs,
    rebuild_differences,
    service_env,
    train_and_promote,
    twins_of,
)
from tests.ingest.helpers import Publisher

pytestmark = pytest.mark.integration

CARS, FIRST_CAR = 30, 9001
STEPS_BEFORE_TRAINING, STEPS_AFTER = 25, 5
#: A small model from Kafka: a few epochs, no supervised model, no held-out evaluation.


def e2e_settings(fresh_settings: Settings) -> Settings:
    """The test's own topics, database and groups, plus its own bucket and registry."""
    bucket = f"e2e-{uuid.uuid4().hex[:8]}"
    clients.gcs_client(fresh_settings).create_bucket(bucket)
    s = fresh_settings
    return s.model_copy(
        update={
            "gcs": s.gcs.model_copy(update={"bucket": bucket}),
            "lake": s.lake.model_copy(update={"flush_seconds": 1.0, "retry_max_seconds": 2.0}),
            "ml": s.ml.model_copy(update={"stream_timeout_ms": 3000}),
            # The bridge's session on the shared broker must not outlive the test for long.
            "ingest": s.ingest.model_copy(update={"bridge_session_expiry": 60}),
        }
    )


def can_connect(settings: Settings, car: str, password: str) -> bool:
    try:
        Publisher(settings, car, password).close()
        return True
    except ConnectionRefusedError:
        return False


@pytest.fixture
def services(
    fresh_settings: Settings, stack_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Settings, dict[str, str], dict[str, Service], int]]:
    settings = e2e_settings(fresh_settings)
    env = service_env(stack_env, settings)
    port = free_port()
    running = {
        "bridge": Service("bridge", ["bridge", f"--metrics-port={port}"], env, tmp_path / "b.log"),
        "projector": Service("projector", ["twin", "run"], env, tmp_path / "twin.log"),
        "archiver": Service("archiver", ["lake", "run"], env, tmp_path / "lake.log"),
        "scorer": Service("scorer", ["ml", "score"], env, tmp_path / "scorer.log"),
        "history": Service("history", ["history", "run"], env, tmp_path / "history.log"),
    }
    for service in running.values():
        service.start()
    try:
        yield settings, env, running, port
    finally:
        codes = {name: service.stop() for name, service in running.items()}
        # Every service stops cleanly on SIGTERM.
        assert codes == dict.fromkeys(running, 0), {n: running[n].tail() for n in running}


def test_mqtt_in_twins_lake_scores_and_explorer_out_and_every_count_reconciles(
    services: tuple[Settings, dict[str, str], dict[str, Service], int],
) -> None:
    settings, env, running, bridge_port = services
    password = f"pw-{uuid.uuid4().hex}"
    car_ids = [f"car{n}" for n in range(FIRST_CAR, FIRST_CAR + CARS)]
    added = subprocess.run(
        [str(FLEET), "ingest", "add-car", *car_ids],
        env=env | {"FLEET_CAR_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    wait_for(lambda: can_connect(settings, car_ids[-1], password), 30, "the car accounts")
    running["bridge"].wait_logged("subscribed", 60)

    cars = Cars(settings, cars=CARS, first_car=FIRST_CAR, password=password)
    gateway = Gateway(settings)
    ledger = Ledger(settings)
    try:
        assert cars.car_ids == car_ids
        for step in range(STEPS_BEFORE_TRAINING):
            cars.step()
            if step == 10:
                gateway.send(bad_inputs(car_ids[0]))
        wait_for(cars.all_answered, 60, "PUBACKs")
        acked = cars.acked()
        wait_for(lambda: acked <= ledger.in_kafka(), 60, "the readings in Kafka")

        # A model trained from Kafka (tensorflow-io), registered and promoted; the scorer,
        # waiting for one, then scores the whole stream with it.
        version = train_and_promote(env, settings.ml.model_name)
        running["scorer"].wait_logged("model loaded", 180)

        for _ in range(STEPS_AFTER):  # readings that arrive after the promotion
            cars.step()
        ledger.wait_quiet(cars, gateway, bridge_port, timeout=240)
        for service in running.values():
            service.check()
        counts = ledger.reconcile(cars, gateway, version)
    finally:
        cars.close()
        gateway.close()
        ledger.close()

    assert counts.problems == []
    published = CARS * (STEPS_BEFORE_TRAINING + STEPS_AFTER)
    assert counts.published == published
    # Nothing was redelivered here, so every count is the same number.
    assert (
        counts.in_kafka,
        counts.distinct_in_kafka,
        counts.on_twins,
        counts.in_lake,
        counts.distinct_in_lake,
        counts.scored,
        counts.scores_in_lake,
    ) == (published,) * 7
    assert counts.dead_letters == counts.bad_inputs == len(bad_inputs("x"))
    assert counts.twins == CARS
    # The history projection holds every reading and every score once.
    assert history_positions(settings, 2 * published) == {"reading": published, "score": published}

    twins = twins_of(settings)
    assert {t["anomaly"]["model_version"] for t in twins.values()} == {version}
    assert rebuild_differences(settings, env) == []
    explorer_shows_the_fleet(settings, twins, published)


def history_positions(settings: Settings, expected: int) -> dict[str, int]:
    """Events in the history collection by kind, once it holds ``expected``; each position once."""
    history = clients.mongo_database(settings)[settings.twin.history_collection]
    wait_for(lambda: history.count_documents({}) >= expected, 60, f"{expected} history events")
    found = [(d["topic"], d["partition"], d["offset"], d["kind"]) for d in history.find()]
    assert len(found) == len(set(found))
    return dict(Counter(kind for *_where, kind in found))


def explorer_shows_the_fleet(
    settings: Settings, twins: dict[str, dict[str, Any]], readings: int
) -> None:
    """The explorer's overview (AppTest) against the same MongoDB and Kafka."""
    from tests.ui.conftest import render_with

    at = render_with(settings)("overview")
    shown = {m.label: m.value for m in at.metric}
    anomalous = sum(1 for t in twins.values() if t["anomaly"]["is_anomaly"])
    attention = sum(1 for t in twins.values() if t["health"]["status"] == "attention")
    assert shown["Cars"] == str(CARS)
    assert shown["Reporting (5 min)"] == str(CARS)  # every car's newest reading is recent
    assert shown["Anomalous now"] == str(anomalous)
    assert shown["Need attention"] == str(attention)
    assert shown["Events in Kafka"] == f"{readings:,}"
    assert shown["Scores in Kafka"] == f"{readings:,}"
    assert shown["Twin projector lag"] == "0"
