"""kill -9 of `fleet ml score` mid-stream: after a restart every reading has a score on the
anomaly topic (duplicates allowed, keyed to the reading), and the twins ignore the duplicates."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, TopicPartition

from fleet import clients
from fleet.avro import anomaly_codec
from fleet.service import Shutdown
from fleet.settings import Settings
from fleet.stack.ports import free_port
from fleet.waiting import wait_for
from ml import registry, simdata
from ml import train as training
from tests.ml.test_ml_stack import isolated, read_topic, scorer_env
from tests.threads import running_in_thread
from twin import queries
from twin.projector import Projector

pytestmark = pytest.mark.integration

CARS, STEPS = 40, 60
REWIND = 150  # messages per partition whose commit we pretend was lost


def start_scorer(settings: Settings, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "fleet"), "ml", "score"],
            env=env | {"FLEET_ML_BATCH_SIZE": "100", "FLEET_ML_POLL_TIMEOUT": "0.1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def promoted_model(settings: Settings, tmp_path: Path) -> str:
    name = settings.ml.model_name
    config = training.TrainConfig(epochs=2, supervised=False, progress=False)
    training.train(
        simdata.simulated_columns(200, 20, seed=5, profile="seed", failure_rate=0.5),
        config,
        tmp_path,
    )
    version = registry.new_version()
    registry.upload(settings, tmp_path, name, version)
    registry.promote(settings, name, version)
    return version


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def anomaly_count(consumer: Any, settings: Settings) -> int:
    return sum(
        consumer.get_watermark_offsets(TopicPartition(settings.topics.anomalies, p))[1]
        for p in range(settings.topics.anomalies_partitions)
    )


def rewind_commits(settings: Settings, by: int) -> int:
    """Move the scorer group's committed offsets back: the state a crash between delivering a
    batch's scores and committing it leaves behind. Returns how many messages were rewound.

    The broker accepts the commit once the killed member's session has expired."""
    topic, partitions = settings.topics.telemetry, settings.topics.telemetry_partitions
    consumer = clients.kafka_consumer(settings, settings.groups.scorer)
    rewound: list[int] = []

    def rewind() -> bool:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 30)
        back = [TopicPartition(topic, tp.partition, max(0, tp.offset - by)) for tp in committed]
        try:
            consumer.commit(offsets=back, asynchronous=False)
        except KafkaException:  # the dead member still owns the group
            return False
        rewound.append(sum(tp.offset - b.offset for tp, b in zip(committed, back, strict=True)))
        return True

    try:
        wait_for(rewind, 60, "the killed scorer's session to expire")
        return rewound[0]
    finally:
        consumer.close()


def test_kill_9_mid_stream_then_restart_scores_every_reading_and_twins_ignore_duplicates(
    fresh_settings: Settings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    settings = isolated(fresh_settings)
    version = promoted_model(settings, tmp_path)

    readings = simdata.simulated_records(CARS, STEPS, seed=13, profile="seed", failure_rate=2.0)
    steps = [readings[i : i + CARS] for i in range(0, len(readings), CARS)]
    env = scorer_env(settings, stack_env, free_port())
    log = tmp_path / "scorer.log"
    counter = clients.kafka_consumer(settings, f"count-{uuid.uuid4().hex[:8]}")
    published = 0
    proc = start_scorer(settings, env, log)
    try:
        # Publish step by step while the scorer runs; kill it once it is well into the stream.
        for step in steps[: STEPS // 2]:
            published += simdata.publish(settings, step)
        wait_for(lambda: anomaly_count(counter, settings) >= 300, 180, "the scorer to start")
        for step in steps[STEPS // 2 : 3 * STEPS // 4]:
            published += simdata.publish(settings, step)
        kill_9(proc)
        scored_before = anomaly_count(counter, settings)
        assert 0 < scored_before < len(readings)
        for step in steps[3 * STEPS // 4 :]:
            published += simdata.publish(settings, step)
        proc = start_scorer(settings, env, log)
        wait_for(
            lambda: len(scored_keys(settings)) == len(readings),
            180,
            "every reading to have a score after the restart",
        )
        # A crash can also land after delivering a batch's scores and before committing it:
        # that batch is scored again. Force that case on the newest readings, so the twins
        # surely see duplicates of the scores they show.
        kill_9(proc)
        scored = anomaly_count(counter, settings)
        rewound = rewind_commits(settings, REWIND)
        assert rewound > 0
        proc = start_scorer(settings, env, log)
        wait_for(
            lambda: anomaly_count(counter, settings) >= scored + rewound,
            180,
            "the rewound readings to be scored again",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        counter.close()
    assert published == len(readings)

    messages = read_topic(settings, settings.topics.anomalies, settings.topics.anomalies_partitions)
    codec = anomaly_codec()
    by_reading: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for m in messages:  # per partition in offset order: per car in the order produced
        event = codec.decode(m.value())
        assert m.key() == event["car_id"].encode()
        by_reading[(event["car_id"], event["seq"])].append(event)
    expected = {(r["car_id"], r["seq"]): r for r in readings}
    assert set(by_reading) == set(expected)  # every reading scored, nothing else
    duplicates = len(messages) - len(expected)
    assert duplicates >= rewound  # the rewound readings were scored again
    latest = {r["car_id"]: (r["car_id"], r["seq"]) for r in readings}
    assert all(len(by_reading[key]) > 1 for key in latest.values())
    for key, events in by_reading.items():
        assert {e["event_time"] for e in events} == {expected[key]["event_time"]}
        assert {e["model_version"] for e in events} == {version}

    check_twins(settings, readings, by_reading)


def check_twins(
    settings: Settings,
    readings: list[dict[str, Any]],
    by_reading: dict[tuple[str, int], list[dict[str, Any]]],
) -> None:
    """Each car's anomaly part is the first score of its latest reading, whatever the
    duplicates after it say (a restarted scorer lacks the previous reading's coolant, so a
    re-score may differ slightly; the first one stands, as it does on a replay)."""
    stop = Shutdown()
    projector = Projector(settings, stop, **{"session.timeout.ms": 6000})
    latest = {r["car_id"]: r for r in readings}
    collection = queries.twins(settings)

    def projected() -> bool:
        twins = list(collection.find({}, {"anomaly": 1, "last_reading": 1}))
        return len(twins) == CARS and all(
            t["anomaly"] is not None and t["anomaly"]["seq"] == latest[t["_id"]]["seq"]
            for t in twins
        )

    with running_in_thread("projector", projector.run, stop):
        wait_for(projected, 180, "the twins to carry every car's latest score")
        wait_for(lambda: caught_up(settings), 120, "the projector to commit every event")
    for car, reading in latest.items():
        twin = queries.get_twin(collection, car)
        assert twin is not None
        first = by_reading[(car, reading["seq"])][0]
        anomaly = twin["anomaly"]
        assert anomaly["score"] == pytest.approx(first["score"], rel=1e-12)
        assert bool(anomaly["recent"] & 1) == first["is_anomaly"]  # bit 0: the reading's flag
        assert twin["last_reading"]["seq"] == reading["seq"]
        assert twin["counters"]["readings_applied"] == STEPS


def caught_up(settings: Settings) -> bool:
    """The projector's group has committed the end of every telemetry and anomaly partition."""
    consumer = clients.kafka_consumer(settings, settings.groups.twin)
    try:
        parts = [
            TopicPartition(topic, p)
            for topic, count in (
                (settings.topics.telemetry, settings.topics.telemetry_partitions),
                (settings.topics.anomalies, settings.topics.anomalies_partitions),
            )
            for p in range(count)
        ]
        committed = consumer.committed(parts, 30)
        return all(
            tp.offset >= consumer.get_watermark_offsets(tp, 30)[1]
            or consumer.get_watermark_offsets(tp, 30)[1] == 0
            for tp in committed
        )
    finally:
        consumer.close()


def scored_keys(settings: Settings) -> set[tuple[str, int]]:
    codec = anomaly_codec()
    messages = read_topic(settings, settings.topics.anomalies, settings.topics.anomalies_partitions)
    return {(e["car_id"], e["seq"]) for e in (codec.decode(m.value()) for m in messages)}
