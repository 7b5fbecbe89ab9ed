"""ML against the real stack: the Kafka slice, training, the registry, promotion, live scoring."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from fleet import clients
from fleet.avro import anomaly_codec, model_announcement_codec
from fleet.settings import Settings
from fleet.waiting import wait_for
from ml import features as ft
from ml import kafka_source, registry, simdata
from ml import train as training

pytestmark = pytest.mark.integration

INTERVAL = 10_000
START = 1_567_606_196_000


def isolated(settings: Settings) -> Settings:
    """``fresh_settings`` plus this test's own registry prefix in the bucket."""
    ml = settings.ml.model_copy(update={"registry_prefix": f"models-{uuid.uuid4().hex[:8]}"})
    return settings.model_copy(update={"ml": ml})


def read_topic(settings: Settings, topic: str, partitions: int) -> list[Any]:
    """Every message of ``topic`` right now (all partitions, from the beginning)."""
    consumer = clients.kafka_consumer(settings, f"test-{uuid.uuid4().hex[:8]}")
    try:
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        highs = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p))[1]
            for p in range(partitions)
        }
        consumer.assign(parts)
        out: list[Any] = []
        done: set[int] = {p for p, h in highs.items() if h == 0}

        def drained() -> bool:
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() is None:
                    out.append(m)
                    if m.offset() + 1 >= highs[m.partition()]:
                        done.add(m.partition())
            return len(done) == partitions

        wait_for(drained, 60, f"reading {topic}")
        return out
    finally:
        consumer.close()


def test_training_read_covers_every_partition_and_exactly_the_slice(
    fresh_settings: Settings,
) -> None:
    settings = fresh_settings
    records = simdata.simulated_records(60, 20, seed=11)
    # One reading delivered twice upstream must count once.
    simdata.publish(settings, [*records, *records[:50]])
    start, end = START + 5 * INTERVAL, START + 15 * INTERVAL
    columns, info = kafka_source.read_slice(settings, start, end, stream_timeout_ms=3000)

    expected = {(r["car_id"], r["seq"]) for r in records if start <= r["event_time"] < end}
    got = set(zip(columns["car_id"].tolist(), columns["seq"].tolist(), strict=True))
    assert got == expected
    assert len(columns["seq"]) == len(expected) == 600
    # Every partition had data, and every message was read.
    assert len(info.offsets) == settings.topics.telemetry_partitions
    assert all(high > low for low, high in info.offsets.values())
    assert info.messages_read == len(records) + 50
    assert info.duplicates == 0  # the duplicates are outside the slice (seq 0)
    assert (info.first_event_ms, info.last_event_ms) == (start, end - INTERVAL)
    # Labels survive the trip through Kafka.
    by_key = {(r["car_id"], r["seq"]): r for r in records}
    for car, seq, occurred in zip(
        columns["car_id"], columns["seq"], columns["failure_occurred"], strict=True
    ):
        assert occurred == by_key[(car, seq)]["failure_occurred"]
    # The whole log, duplicates included, deduplicates to the simulated readings.
    whole, info = kafka_source.read_slice(settings, stream_timeout_ms=3000)
    assert len(whole["seq"]) == len(records) and info.duplicates == 50


def test_an_empty_topic_fails_loudly(fresh_settings: Settings) -> None:
    with pytest.raises(kafka_source.ShortReadError):
        kafka_source.read_slice(fresh_settings, stream_timeout_ms=1000)


def tiny_config(**kw: Any) -> training.TrainConfig:
    return training.TrainConfig(
        epochs=kw.pop("epochs", 6), supervised_epochs=2, progress=False, **kw
    )


def test_a_model_separates_failing_from_healthy_and_round_trips_the_registry(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated(fresh_settings)
    train_cols = simdata.simulated_columns(300, 30, seed=3, profile="seed", failure_rate=0.5)
    held_out = simdata.simulated_columns(
        150, 30, seed=4, first_car=50_001, profile="seed", failure_rate=0.5
    )
    card = training.train(
        train_cols, tiny_config(), tmp_path / "m", held_out, {"source": "simulator"}
    )
    evaluation = card["evaluation"]
    assert evaluation["autoencoder"]["roc_auc"] >= 0.95
    assert evaluation["classifier"]["roc_auc"] >= 0.9
    assert (tmp_path / "m" / "roc.png").stat().st_size > 1000
    assert (tmp_path / "m" / "logs" / "autoencoder").is_dir()

    version = registry.new_version()
    uri = registry.upload(settings, tmp_path / "m", "test-model", version)
    assert uri.endswith(f"/test-model/{version}/")
    listed = registry.list_models(settings)
    assert [(m["name"], m["version"]) for m in listed] == [("test-model", version)]
    with pytest.raises(registry.RegistryError, match="already exists"):
        registry.upload(settings, tmp_path / "m", "test-model", version)

    loaded = registry.load(settings, "test-model", version)
    local = registry.load_dir(tmp_path / "m", "test-model", version)
    assert loaded.threshold == card["threshold"]
    assert loaded.card["training"]["range"] == {"source": "simulator"}
    assert loaded.card["code_version"]
    x = ft.transform(held_out, loaded.normalizer)
    np.testing.assert_allclose(loaded.scores(x)[0], local.scores(x)[0], rtol=1e-5)

    announced = registry.promote(settings, "test-model", version)
    message = read_topic(settings, settings.topics.models, 1)[-1]
    assert message.key() == b"test-model"
    assert model_announcement_codec().decode(message.value()) == announced
    with pytest.raises(registry.RegistryError, match="no model"):
        registry.promote(settings, "test-model", "v0")


def scorer_env(settings: Settings, stack_env: dict[str, str], port: int) -> dict[str, str]:
    return {
        **os.environ,
        **stack_env,
        "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
        "FLEET_TOPICS_ANOMALIES": settings.topics.anomalies,
        "FLEET_TOPICS_MODELS": settings.topics.models,
        "FLEET_GROUPS_SCORER": settings.groups.scorer,
        "FLEET_ML_REGISTRY_PREFIX": settings.ml.registry_prefix,
        "FLEET_ML_MODEL_NAME": settings.ml.model_name,
        "FLEET_ML_METRICS_PORT": str(port),
        "FLEET_LOG_FORMAT": "json",
    }


def metric(port: int, name: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def test_scorer_events_match_readings_and_promotion_hot_reloads(
    fresh_settings: Settings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    from fleet.stack.ports import free_port

    settings = isolated(fresh_settings)
    name = settings.ml.model_name
    train_cols = simdata.simulated_columns(200, 20, seed=5, profile="seed", failure_rate=0.5)
    versions = []
    for i in range(2):
        config = training.TrainConfig(epochs=2, supervised=False, progress=False, seed=i)
        training.train(train_cols, config, tmp_path / str(i))
        versions.append(registry.new_version())
        registry.upload(settings, tmp_path / str(i), name, versions[-1])
    registry.promote(settings, name, versions[0])

    cars = 50
    readings = simdata.simulated_records(cars, 200, seed=6)
    steps = [readings[i : i + cars] for i in range(0, len(readings), cars)]
    first = [r for step in steps[:6] for r in step]
    simdata.publish(settings, first)

    port = free_port()
    log = (tmp_path / "scorer.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "fleet"), "ml", "score"],
        env=scorer_env(settings, stack_env, port) | {"FLEET_ML_BATCH_SIZE": "60"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    anomalies = settings.topics.anomalies
    partitions = settings.topics.anomalies_partitions
    counter = clients.kafka_consumer(settings, f"count-{uuid.uuid4().hex[:8]}")
    later = iter(steps[6:])
    second: list[dict[str, Any]] = []

    def publish_step() -> None:
        step = next(later, None)
        if step is not None:
            simdata.publish(settings, step)
            second.extend(step)

    try:

        def count() -> int:
            return sum(
                counter.get_watermark_offsets(TopicPartition(anomalies, p))[1]
                for p in range(partitions)
            )

        wait_for(lambda: count() >= len(first), 180, "scores of the first readings")
        # Promote the second version while readings keep arriving: the switch happens between
        # two batches of a busy stream, not in a quiet moment.
        registry.promote(settings, name, versions[1])

        def reloaded_while_publishing() -> bool:
            publish_step()
            return versions[1] in metric(port, "fleet_ml_model_info")

        wait_for(reloaded_while_publishing, 120, "the scorer to load the promoted version")
        for _ in range(3):
            publish_step()
        wait_for(lambda: count() >= len(first) + len(second), 120, "scores of the later readings")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        counter.close()

    events = read_topic(settings, anomalies, partitions)
    check_events(
        events, first=first, second=second, versions=versions, name=name, tmp_path=tmp_path
    )


def check_events(
    messages: list[Any],
    *,
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
    versions: list[str],
    name: str,
    tmp_path: Path,
) -> None:
    """Every reading scored exactly once; per partition (per car) the old version's scores
    all come before the new one's; the last readings are the new version's; each score is
    that version's own score for the reading."""
    codec = anomaly_codec()
    events = [(m.key(), codec.decode(m.value())) for m in messages]
    readings = {(r["car_id"], r["seq"]): r for r in [*first, *second]}
    keys = [(e["car_id"], e["seq"]) for _k, e in events]
    assert len(keys) == len(set(keys)) == len(readings)  # none dropped, none scored twice
    assert set(keys) == set(readings)
    local = {v: registry.load_dir(tmp_path / str(i), name, v) for i, v in enumerate(versions)}
    by_version: dict[str, list[dict[str, Any]]] = {v: [] for v in versions}
    for key, event in events:
        reading = readings[(event["car_id"], event["seq"])]
        assert key == event["car_id"].encode()
        assert event["event_time"] == reading["event_time"]
        assert event["model_name"] == name
        by_version[event["model_version"]].append(reading)
        model = local[event["model_version"]]
        assert event["threshold"] == pytest.approx(model.threshold)
        assert event["is_anomaly"] == (event["score"] >= event["threshold"])
        assert len(event["top_sensors"]) == 3
        contributions = [s["contribution"] for s in event["top_sensors"]]
        assert contributions == sorted(contributions, reverse=True)
    # The first readings by the first version; the last three steps, published after the
    # reload was visible, by the promoted one; per partition, one switch and no way back.
    first_keys = {(r["car_id"], r["seq"]) for r in first}
    assert first_keys <= {(r["car_id"], r["seq"]) for r in by_version[versions[0]]}
    assert {(r["car_id"], r["seq"]) for r in second[-150:]} <= {
        (r["car_id"], r["seq"]) for r in by_version[versions[1]]
    }
    per_partition: dict[int, list[int]] = {}
    for m in messages:
        version_index = versions.index(codec.decode(m.value())["model_version"])
        per_partition.setdefault(m.partition(), []).append(version_index)
    for sequence in per_partition.values():
        assert sequence == sorted(sequence)
    # Scores are the model's own reconstruction errors for that reading, with each car's
    # previous reading known across batches and model versions (the coolant-rise features).
    rows = [*first, *second]
    columns = ft.columns_from_records(rows)
    keys = [(r["car_id"], r["seq"]) for r in rows]
    for version, model in local.items():
        scores = model.scores(ft.transform(columns, model.normalizer))[0]
        expected = dict(zip(keys, scores, strict=True))
        for _key, event in events:
            if event["model_version"] == version:
                assert event["score"] == pytest.approx(
                    expected[(event["car_id"], event["seq"])], rel=1e-4, abs=1e-6
                )


def test_training_input_from_the_lake_follows_the_same_slice_rules(
    fresh_settings: Settings,
) -> None:
    """Readings archived by the real lake archiver (20 of them produced twice) come back as
    the same slice and columns that training from Kafka gets."""
    from ml.lake_source import EmptyLakeError, read_lake
    from tests.lake.conftest import archiving, produce
    from tests.lake.test_archiver import wait_archived

    bucket = f"ml-lake-{uuid.uuid4().hex[:8]}"
    clients.gcs_client(fresh_settings).create_bucket(bucket)
    settings = fresh_settings.model_copy(
        update={
            "gcs": fresh_settings.gcs.model_copy(update={"bucket": bucket}),
            "lake": fresh_settings.lake.model_copy(update={"flush_seconds": 0.5}),
        }
    )
    with pytest.raises(EmptyLakeError):
        read_lake(settings)
    records = simdata.simulated_records(20, 10, seed=12)
    produce(settings, records)
    produce(settings, records[100:120])  # redelivered readings
    with archiving(settings):
        wait_archived(settings)
    start, end = START + 2 * INTERVAL, START + 8 * INTERVAL
    columns, info = read_lake(settings, start, end)
    expected = {(r["car_id"], r["seq"]) for r in records if start <= r["event_time"] < end}
    got = list(zip(columns["car_id"].tolist(), columns["seq"].tolist(), strict=True))
    assert set(got) == expected and len(got) == len(expected) == 120
    assert info["duplicates"] == 20
    # The same pipeline as Kafka input: features and labels.
    assert ft.raw_features(columns).shape == (120, len(ft.FEATURES))
    assert ft.has_labels(columns)
    by_key = {(r["car_id"], r["seq"]): r for r in records}
    for key, speed in zip(got, columns["speed"], strict=True):
        assert speed == pytest.approx(by_key[key]["speed"], rel=1e-6)
