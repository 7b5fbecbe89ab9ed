"""The bridge against the real stack: round trip, dead letters, ACL, and no loss under kill -9."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from fleet.avro import telemetry_codec
from fleet.contract import SENSORS
from fleet.settings import Settings
from fleet.stack.services import Mosquitto
from fleet.waiting import DeadlineExceeded, wait_for
from ingest.bridge import Bridge
from ingest.deadletter import header_dict
from tests.ingest.helpers import (
    TEST_SESSION_EXPIRY,
    Publisher,
    TopicReader,
    hostile_payloads,
    short_lived,
    valid_payload,
    valid_sensors,
)

pytestmark = pytest.mark.integration

FLEET = str(Path(sys.executable).parent / "fleet")
DATA = Path(__file__).parent.parent / "data"


def test_readings_round_trip_from_mqtt_to_kafka_with_event_time_and_sequence(
    fresh_settings: Settings,
) -> None:
    codec = telemetry_codec()
    reader = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    publisher = Publisher(fresh_settings)
    try:
        with Bridge(
            short_lived(fresh_settings), client_id=f"bridge-{uuid.uuid4().hex[:6]}"
        ) as bridge:
            for i in range(300):
                publisher.publish(
                    f"vehicles/sensor/data/car{i % 3}",
                    valid_payload(i, timestamp_ms=1_700_000_000_000 + i, seq=i),
                )
            # No timestamp and no seq: the bridge stamps receive time and a clock sequence.
            publisher.publish("vehicles/sensor/data/car9", valid_payload(1))
            publisher.publish("vehicles/sensor/data/car9", valid_payload(2))
            publisher.wait_all(302)
            messages = reader.wait_count(302)
            wait_for(lambda: bridge.stats.in_flight == 0, 10, "nothing in flight")
            stats = bridge.stats
        assert (stats.received, stats.produced, stats.dead_lettered) == (302, 302, 0)
        assert stats.acked == 302
    finally:
        publisher.close()
        reader.close()
    records = [codec.decode(m.value()) for m in messages]
    assert all(m.key().decode() == r["car_id"] for m, r in zip(messages, records, strict=True))
    by_seq = {r["seq"]: r for r in records if r["car_id"] != "car9"}
    assert sorted(by_seq) == list(range(300))
    first = by_seq[4]
    assert (first["car_id"], first["event_time"]) == ("car1", 1_700_000_000_004)
    assert {k: first[k] for k in SENSORS} == pytest.approx(valid_sensors(4), rel=1e-6)
    # One car's readings keep their order (one partition per car).
    car0 = [r["seq"] for r in records if r["car_id"] == "car0"]
    assert car0 == sorted(car0)
    stamped = [r for r in records if r["car_id"] == "car9"]
    assert len(stamped) == 2
    assert stamped[0]["seq"] < stamped[1]["seq"]
    assert abs(stamped[0]["event_time"] - stamped[0]["seq"] // 1000) < 5
    assert stamped[0]["event_time"] > 1_700_000_000_000


PAD = b"x" * 20_000
BAD_INPUTS = [
    ("vehicles/sensor/data/car1", b"{not json", "not_json"),
    ("vehicles/sensor/data/car1", b"[1, 2, 3]", "not_object"),
    (
        "vehicles/sensor/data/car1",
        json.dumps({k: v for k, v in valid_sensors().items() if k != "speed"}).encode(),
        "missing_field",
    ),
    (
        "vehicles/sensor/data/car1",
        json.dumps(valid_sensors() | {"speed": "x"}).encode(),
        "wrong_type",
    ),
    ("vehicles/sensor/data/car1", valid_payload()[:-1] + b',"speed":NaN}', "not_finite"),
    ("vehicles/sensor/data/car1", valid_payload()[:-1] + b',"speed":Infinity}', "not_finite"),
    (
        "vehicles/sensor/data/car1",
        json.dumps(valid_sensors() | {"tire_pressure_2_1": -4}).encode(),
        "out_of_range",
    ),
    (
        "vehicles/sensor/data/car1",
        json.dumps(valid_sensors() | {"throttle_pos": 1.2}).encode(),
        "out_of_range",
    ),
    (
        "vehicles/sensor/data/car1",
        valid_payload()[:-1] + b',"p":"' + b"x" * 20_000 + b'"}',
        "oversized",
    ),
    ("vehicles/sensor/data/", valid_payload(), "car_id"),
    ("vehicles/sensor/data/" + "c" * 65, valid_payload(), "car_id"),
    ("vehicles/sensor/data/car*1", valid_payload(), "car_id"),
    ("vehicles/sensor/data/car1/engine", valid_payload(), "topic"),
    *(("vehicles/sensor/data/car1", payload, reason) for payload, reason in hostile_payloads()),
]


def test_every_kind_of_bad_input_lands_in_the_dead_letter_topic_with_its_reason(
    fresh_settings: Settings,
) -> None:
    telemetry = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    dead = TopicReader(fresh_settings, fresh_settings.topics.dead_letters)
    publisher = Publisher(fresh_settings)
    try:
        with Bridge(
            short_lived(fresh_settings), client_id=f"bridge-{uuid.uuid4().hex[:6]}"
        ) as bridge:
            publisher.publish("vehicles/sensor/data/car1", valid_payload(0, seq=1))
            for topic, payload, _reason in BAD_INPUTS:
                publisher.publish(topic, payload)
            publisher.publish("vehicles/sensor/data/car1", valid_payload(0, seq=2))
            publisher.wait_all(len(BAD_INPUTS) + 2)
            letters = dead.wait_count(len(BAD_INPUTS))
            readings = telemetry.wait_count(2)
            wait_for(lambda: bridge.stats.in_flight == 0, 10, "nothing in flight")
            stats = bridge.stats
    finally:
        publisher.close()
        telemetry.close()
        dead.close()
    # The bridge kept going after the bad input, and the counts reconcile.
    assert len(readings) == 2
    assert stats.received == stats.produced + stats.dead_lettered == len(BAD_INPUTS) + 2
    got = sorted(
        (header_dict(m.headers())["mqtt_topic"], m.value(), header_dict(m.headers())["reason"])
        for m in letters
    )
    assert got == sorted(BAD_INPUTS)  # original bytes, topic and reason of each
    for message in letters:
        headers = header_dict(message.headers())
        assert headers["source"] == "mqtt"
        assert headers["detail"]
        assert int(headers["received_at"]) > 1_700_000_000_000
    assert sum(stats.by_reason.values()) == len(BAD_INPUTS)


def test_the_bridge_account_may_subscribe_but_not_publish_readings(
    fresh_settings: Settings,
) -> None:
    """Mosquitto refuses the bridge's readings for a car; the one topic the ACL's car pattern
    lets it write (`vehicles/sensor/data/bridge`) is dead-lettered as a service account."""
    dead = TopicReader(fresh_settings, fresh_settings.topics.dead_letters)
    telemetry = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    mqtt = fresh_settings.mqtt
    as_bridge = Publisher(fresh_settings, mqtt.username, mqtt.password.get_secret_value())
    gateway = Publisher(fresh_settings)
    try:
        with Bridge(
            short_lived(fresh_settings), client_id=f"bridge-{uuid.uuid4().hex[:6]}"
        ) as bridge:
            as_bridge.publish("vehicles/sensor/data/car7", valid_payload(seq=1))
            as_bridge.publish(f"vehicles/sensor/data/{mqtt.username}", valid_payload(seq=2))
            as_bridge.wait_all(2)
            gateway.publish("vehicles/sensor/data/car7", valid_payload(seq=3))
            gateway.wait_all(1)
            readings = telemetry.wait_count(1)
            letters = dead.wait_count(1)
            wait_for(lambda: bridge.stats.in_flight == 0, 10, "nothing in flight")
            received = bridge.stats.received
    finally:
        as_bridge.close()
        gateway.close()
        dead.close()
        telemetry.close()
    assert len(as_bridge.refused) == 1  # PUBACK "Not authorized" for car7
    assert received == 2  # the refused one never reached the bridge
    assert [telemetry_codec().decode(m.value())["seq"] for m in readings] == [3]
    assert header_dict(letters[0].headers())["reason"] == "car_id"
    assert (
        header_dict(letters[0].headers())["mqtt_topic"] == f"vehicles/sensor/data/{mqtt.username}"
    )


def test_a_car_account_is_carried_through_and_its_password_stays_out_of_the_logs(
    fresh_settings: Settings, stack_env: dict[str, str]
) -> None:
    car = f"car-{uuid.uuid4().hex[:6]}"
    secret = f"s3cret-{uuid.uuid4().hex}"
    env = os.environ | stack_env | {"FLEET_CAR_PASSWORD": secret, "FLEET_LOG_LEVEL": "DEBUG"}
    result = subprocess.run(
        [FLEET, "ingest", "add-car", car],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert secret not in Mosquitto(fresh_settings).password_file.read_text()  # hashed
    telemetry = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    wait_for(lambda: _can_connect(fresh_settings, car, secret), 10, "the car account to be loaded")
    publisher = Publisher(fresh_settings, car, secret)
    try:
        with Bridge(short_lived(fresh_settings), client_id=f"bridge-{uuid.uuid4().hex[:6]}"):
            publisher.publish("vehicles/sensor/data/other-car", valid_payload(seq=1))
            publisher.publish(f"vehicles/sensor/data/{car}", valid_payload(seq=2))
            publisher.wait_all(2)
            readings = telemetry.wait_count(1)
    finally:
        publisher.close()
        telemetry.close()
    assert len(publisher.refused) == 1
    assert [m.key().decode() for m in readings] == [car]


def _can_connect(settings: Settings, username: str, password: str) -> bool:
    try:
        Publisher(settings, username, password).close()
        return True
    except ConnectionRefusedError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """The bridge's Prometheus metrics without labels, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fleet_bridge_") and "{" not in line:
            name, value = line.split()
            values[name] = float(value)
    return values


def bridge_env(stack_env: dict[str, str], settings: Settings, client_id: str) -> dict[str, str]:
    return (
        os.environ
        | stack_env
        | {
            "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
            "FLEET_TOPICS_DEAD_LETTERS": settings.topics.dead_letters,
            "FLEET_GROUPS_BRIDGE": settings.groups.bridge,
            "FLEET_INGEST_BRIDGE_CLIENT_ID": client_id,
            "FLEET_INGEST_BRIDGE_SESSION_EXPIRY": str(TEST_SESSION_EXPIRY),
            "FLEET_LOG_FORMAT": "json",
        }
    )


def test_kill_9_under_load_loses_no_acknowledged_reading(
    fresh_settings: Settings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    total = 6000
    env = bridge_env(stack_env, fresh_settings, f"bridge-{uuid.uuid4().hex[:6]}")
    log = (tmp_path / "bridge.log").open("w")
    codec = telemetry_codec()
    reader = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    bridge = subprocess.Popen([FLEET, "bridge"], env=env, stdout=log, stderr=log)
    publisher = Publisher(fresh_settings)
    try:
        # The bridge is up once a first reading comes through (before it subscribes, nobody
        # holds a session for the shared subscription, so keep trying).
        def warmed_up() -> bool:
            publisher.publish("vehicles/sensor/data/warmup", valid_payload(seq=0))
            return len(reader.poll()) > 0

        wait_for(warmed_up, 60, "the bridge to carry a first reading", interval=0.5)
        sent: dict[int, int] = {}  # MQTT message id -> reading seq, for the ones PUBACKed
        for i in range(1, total + 1):
            sent[
                publisher.publish(f"vehicles/sensor/data/car{i % 50}", valid_payload(i, seq=i))
            ] = i
            if i == total // 3:
                # Under load: wait until the bridge is visibly busy, then kill it.
                wait_for(lambda: len(reader.poll()) > 100, 30, "the bridge to be busy")
                bridge.send_signal(signal.SIGKILL)
                bridge.wait(10)
                in_kafka_at_kill = len(reader.poll())
        publisher.wait_all()
        assert in_kafka_at_kill < total  # it really died mid-stream
        port = free_port()
        bridge = subprocess.Popen(
            [FLEET, "bridge", f"--metrics-port={port}"], env=env, stdout=log, stderr=log
        )
        acked = {sent[mid] for mid in publisher.acked if mid in sent and sent[mid] > 0}
        assert len(acked) == total

        def all_acked_in_kafka() -> bool:
            seqs = {codec.decode(m.value())["seq"] for m in reader.poll()}
            return acked <= seqs

        wait_for(all_acked_in_kafka, 120, "every acknowledged reading in Kafka", interval=0.2)

        def reconciled() -> dict[str, float] | None:
            m = scrape(port)
            settled = m["fleet_bridge_in_flight"] == 0
            return (
                m
                if settled and m["fleet_bridge_received_total"] == m["fleet_bridge_produced_total"]
                else None
            )

        metrics = wait_for(reconciled, 30, "the bridge's metrics to reconcile")
        assert metrics["fleet_bridge_produced_total"] > 0  # the restarted bridge caught up
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(30) == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
        publisher.close()
        reader.close()
        log.close()
    text = (tmp_path / "bridge.log").read_text()
    assert "bridge stopped" in text
    assert fresh_settings.mqtt.password.get_secret_value() not in text


def test_the_csv_importer_replays_the_seed_sample_and_dead_letters_bad_rows(
    fresh_settings: Settings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    lines = (DATA / "car-sensor-sample.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[2 + SENSORS.index("tire_pressure_1_1")] = "-32"
    bad = [
        lines[1].replace("car1", "car 1", 1),  # unsafe car id
        ",".join(cells),  # negative tire pressure
        "1567606196,car3,1,2,3",  # too few columns
    ]
    file = tmp_path / "sample.csv"
    file.write_text("\n".join([*lines, *bad]) + "\n")
    env = bridge_env(stack_env, fresh_settings, "unused")
    result = subprocess.run(
        [FLEET, "ingest", "csv", str(file)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "1003 rows, 1000 readings" in result.stdout
    telemetry = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    dead = TopicReader(fresh_settings, fresh_settings.topics.dead_letters)
    try:
        readings = [telemetry_codec().decode(m.value()) for m in telemetry.wait_count(1000)]
        letters = dead.wait_count(3)
    finally:
        telemetry.close()
        dead.close()
    first = min(readings, key=lambda r: (r["event_time"], r["car_id"]))
    assert (first["car_id"], first["event_time"]) == ("car1", 1_567_606_196_000)
    assert len({(r["car_id"], r["seq"]) for r in readings}) == 1000
    rows = {header_dict(m.headers())["row"]: header_dict(m.headers()) for m in letters}
    assert {row: h["reason"] for row, h in rows.items()} == {
        "1002": "car_id",
        "1003": "out_of_range",
        "1004": "missing_field",
    }
    assert {m.value().decode() for m in letters} == set(bad)
    assert all(h["file"] == "sample.csv" for h in rows.values())


def test_backpressure_when_kafka_cannot_take_readings_then_resume_without_loss(
    fresh_settings: Settings,
) -> None:
    """The telemetry topic does not exist yet, so Kafka confirms nothing: the bridge takes at
    most its in-flight bound from the broker. Once the topic appears, everything flows."""
    from confluent_kafka.admin import NewTopic

    from fleet.clients import kafka_admin

    missing = f"{fresh_settings.topics.telemetry}.later"
    settings = fresh_settings.model_copy(
        update={
            "topics": fresh_settings.topics.model_copy(update={"telemetry": missing}),
            "ingest": fresh_settings.ingest.model_copy(update={"bridge_max_in_flight": 40}),
        }
    )
    publisher = Publisher(settings)
    reader: TopicReader | None = None
    try:
        with Bridge(short_lived(settings), client_id=f"bridge-{uuid.uuid4().hex[:6]}") as bridge:
            for i in range(200):
                publisher.publish(f"vehicles/sensor/data/car{i % 7}", valid_payload(i, seq=i))
            publisher.wait_all()  # the broker holds all 200
            wait_for(lambda: bridge.stats.received >= 40, 30, "the bridge to fill its window")
            with pytest.raises(DeadlineExceeded):
                wait_for(lambda: bridge.stats.received > 40, 3, "more than the bound")
            assert bridge.stats.in_flight == 40
            assert bridge.stats.acked == 0
            admin = kafka_admin(settings)
            admin.create_topics([NewTopic(missing, 3, 1)])[missing].result()
            reader = TopicReader(settings, missing)
            messages = reader.wait_count(200, timeout=90)
            wait_for(lambda: bridge.stats.acked == 200, 30, "every reading acknowledged")
    finally:
        publisher.close()
        if reader is not None:
            reader.close()
    assert {telemetry_codec().decode(m.value())["seq"] for m in messages} == set(range(200))


# --- No message can stop ingest (issue 16) ---


def _letters_by_reason(letters: list[Message]) -> dict[str, list[Message]]:
    by_reason: dict[str, list[Message]] = {}
    for message in letters:
        by_reason.setdefault(header_dict(message.headers())["reason"], []).append(message)
    return by_reason


def test_no_single_message_stops_the_bridge(fresh_settings: Settings) -> None:
    """Each message that once stopped the bridge for every car, followed by a valid reading
    that must be in Kafka within 10 s."""
    huge = b"x" * (10 * 1024 * 1024)  # over Mosquitto's packet limit: refused there
    large = valid_payload()[:-1] + b',"pad":"' + b"y" * 900_000 + b'"}'  # passes Mosquitto
    poisons = [
        (huge, None),
        (large, "oversized"),
        *hostile_payloads(),
    ]
    telemetry = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    dead = TopicReader(fresh_settings, fresh_settings.topics.dead_letters)
    good = Publisher(fresh_settings)
    try:
        with Bridge(
            short_lived(fresh_settings), client_id=f"bridge-{uuid.uuid4().hex[:6]}"
        ) as bridge:
            for i, (payload, _reason) in enumerate(poisons):
                hostile = Publisher(fresh_settings)
                hostile.publish("vehicles/sensor/data/car1", payload)
                if len(payload) < fresh_settings.mqtt.max_packet_bytes:
                    hostile.wait_all(1)
                else:  # Mosquitto drops the connection instead of answering
                    wait_for(lambda h=hostile: not h.client.is_connected(), 10, "a refusal")
                hostile.close()
                good.publish("vehicles/sensor/data/car2", valid_payload(i, seq=i))
                telemetry.wait_count(i + 1, timeout=10)
            wait_for(lambda: bridge.stats.in_flight == 0, 10, "nothing in flight")
            letters = dead.wait_count(len(poisons) - 1)
            stats = bridge.stats
    finally:
        good.close()
        telemetry.close()
        dead.close()
    assert [telemetry_codec().decode(m.value())["seq"] for m in telemetry.messages] == list(
        range(len(poisons))
    )
    # The 10 MB message never reached the bridge; every other one is one dead letter.
    assert stats.received == 2 * len(poisons) - 1
    by_reason = _letters_by_reason(letters)
    assert sorted((r, len(m)) for r, m in by_reason.items()) == sorted(
        Counter(reason for _p, reason in poisons if reason).items()
    )
    # A dead letter carries a bounded prefix of the payload, with its length and digest.
    (oversized,) = by_reason["oversized"]
    headers = header_dict(oversized.headers())
    limit = fresh_settings.ingest.dead_letter_payload_bytes
    assert oversized.value() == large[:limit]
    assert headers["payload_bytes"] == str(len(large))
    assert headers["payload_sha256"] == hashlib.sha256(large).hexdigest()
    assert headers["payload_truncated"] == "true"
    (deep,) = by_reason["too_deep"]
    assert header_dict(deep.headers())["payload_truncated"] == "false"
    assert len(deep.value()) == int(header_dict(deep.headers())["payload_bytes"])


def test_a_retained_reading_is_dead_lettered_once_and_restarts_create_no_readings(
    fresh_settings: Settings,
) -> None:
    settings = short_lived(fresh_settings)
    car = f"retained-{uuid.uuid4().hex[:6]}"
    client_id = f"bridge-{uuid.uuid4().hex[:6]}"
    telemetry = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    dead = TopicReader(fresh_settings, fresh_settings.topics.dead_letters)
    publisher = Publisher(fresh_settings)
    marker = 0
    try:
        for _run in range(3):  # the first run, then two restarts of the same bridge
            with Bridge(settings, client_id=client_id):
                if marker == 0:
                    publisher.publish(
                        f"vehicles/sensor/data/{car}", valid_payload(seq=1), retain=True
                    )
                # A marker reading behind anything the broker sends at (re)subscription.
                marker += 1
                publisher.publish("vehicles/sensor/data/marker", valid_payload(seq=marker))
                wait_for(
                    lambda m=marker: sum(x.key() == b"marker" for x in telemetry.poll()) >= m,
                    30,
                    f"marker reading {marker}",
                )
        letters = dead.wait_count(1)
    finally:
        # Clear the retained message so nothing else on the shared broker meets it.
        publisher.publish(f"vehicles/sensor/data/{car}", b"", retain=True)
        publisher.wait_all()
        publisher.close()
        telemetry.close()
        dead.close()
    assert [m.key() for m in telemetry.messages] == [b"marker"] * 3  # no reading of `car`
    assert [header_dict(m.headers())["reason"] for m in letters] == ["retained"]
    assert header_dict(letters[0].headers())["mqtt_topic"] == f"vehicles/sensor/data/{car}"
    assert letters[0].value() == valid_payload(seq=1)


def test_a_message_that_breaks_the_bridges_code_is_dead_lettered_as_poison(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected failures: the slow-path decoder raising on one payload, and the bulk Avro
    encoder raising on a batch holding one car. Only the culprit is dead-lettered."""
    from ingest import bridge as bridge_module

    real_parse = bridge_module.parse_payload

    def breaking_parse(payload: bytes, max_bytes: int) -> Any:
        if b'"poison"' in payload:
            raise ZeroDivisionError("injected")
        return real_parse(payload, max_bytes)

    monkeypatch.setattr(bridge_module, "parse_payload", breaking_parse)
    telemetry = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    dead = TopicReader(fresh_settings, fresh_settings.topics.dead_letters)
    publisher = Publisher(fresh_settings)
    try:
        with Bridge(
            short_lived(fresh_settings), client_id=f"bridge-{uuid.uuid4().hex[:6]}"
        ) as bridge:
            real_encode = bridge.encoder.encode_rows

            def breaking_encode(car_ids: list[str], *args: Any) -> list[bytes]:
                if "car-breaks-avro" in car_ids:
                    raise OverflowError("injected")
                return real_encode(car_ids, *args)

            monkeypatch.setattr(bridge.encoder, "encode_rows", breaking_encode)
            publisher.publish("vehicles/sensor/data/car1", valid_payload()[:-1] + b',"poison":1}')
            for i in range(20):
                car = "car-breaks-avro" if i == 10 else f"car{i}"
                publisher.publish(f"vehicles/sensor/data/{car}", valid_payload(i, seq=i))
            publisher.wait_all()
            readings = telemetry.wait_count(19, timeout=10)
            letters = dead.wait_count(2)
            wait_for(lambda: bridge.stats.in_flight == 0, 10, "nothing in flight")
            stats = bridge.stats
    finally:
        publisher.close()
        telemetry.close()
        dead.close()
    assert sorted(m.key().decode() for m in readings) == sorted(
        f"car{i}" for i in range(20) if i != 10
    )
    errors = sorted(
        (header_dict(m.headers())["reason"], header_dict(m.headers())["error"]) for m in letters
    )
    assert errors == [("poison", "OverflowError"), ("poison", "ZeroDivisionError")]
    assert stats.received == stats.produced + stats.dead_lettered == 21


def test_a_dead_letter_the_topic_refuses_as_too_large_goes_again_without_its_payload(
    fresh_settings: Settings,
) -> None:
    """A dead-letter topic configured elsewhere with a small `max.message.bytes`: Kafka refuses
    the dead letter; the bridge sends it again without its payload instead of holding on."""
    from confluent_kafka.admin import NewTopic

    from fleet.clients import kafka_admin

    small = f"{fresh_settings.topics.dead_letters}.small"
    admin = kafka_admin(fresh_settings)  # kept: the future needs its client alive
    admin.create_topics([NewTopic(small, 1, 1, config={"max.message.bytes": "4096"})])[
        small
    ].result()
    settings = fresh_settings.model_copy(
        update={"topics": fresh_settings.topics.model_copy(update={"dead_letters": small})}
    )
    telemetry = TopicReader(settings, settings.topics.telemetry)
    dead = TopicReader(settings, small)
    publisher = Publisher(settings)
    noise = base64.b64encode(os.urandom(22_500))  # 30 kB that compression cannot shrink
    big = valid_payload()[:-1] + b',"pad":"' + noise + b'"}'  # oversized
    try:
        with Bridge(short_lived(settings), client_id=f"bridge-{uuid.uuid4().hex[:6]}") as bridge:
            publisher.publish("vehicles/sensor/data/car1", big)
            publisher.publish("vehicles/sensor/data/car2", valid_payload(seq=1))
            publisher.wait_all(2)
            telemetry.wait_count(1, timeout=10)
            (letter,) = dead.wait_count(1)
            wait_for(lambda: bridge.stats.in_flight == 0, 10, "nothing in flight")
            stats = bridge.stats
    finally:
        publisher.close()
        telemetry.close()
        dead.close()
    headers = header_dict(letter.headers())
    assert letter.value() in (b"", None)
    assert headers["reason"] == "oversized"
    assert headers["payload_omitted"] == "too large for the topic"
    assert headers["payload_bytes"] == str(len(big))
    assert headers["payload_sha256"] == hashlib.sha256(big).hexdigest()
    assert stats.received == stats.produced + stats.dead_lettered == 2
