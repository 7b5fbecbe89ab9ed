"""Commands against the real stack: refusals (stale version, unknown car) and the MQTT ACL."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from fleet import clients
from fleet.avro import twin_change_codec
from fleet.contract import COMMAND_TOPIC_PREFIX
from fleet.settings import Settings
from fleet.stack.services import Mosquitto
from fleet.waiting import wait_for
from tests.commands.helpers import fleet, read_all, topic_total
from tests.twin.factories import reading
from tests.twin.kafka_helpers import produce, running_projector, twins_collection
from twin import commands

pytestmark = pytest.mark.integration


def test_a_stale_version_is_refused_by_the_cli_and_by_the_projector(
    stack_env: dict[str, str], fresh_settings: Settings
) -> None:
    settings = fresh_settings
    twins = twins_collection(settings)
    produce(settings, [reading("car1", seq=0, control_unit_firmware=1000)])
    with running_projector(settings):
        wait_for(lambda: twins.find_one({"_id": "car1"}), 30, "car1's twin")
        applied = fleet(
            stack_env,
            settings,
            "twin",
            "set",
            "car1",
            "firmware=2000",
            "--expect-version",
            "0",
            "--wait",
        )
        assert applied.returncode == 0, applied.stderr
        assert "car1: applied (desired version 1)" in applied.stdout

        # The CLI sees the version is stale and sends nothing.
        stale = fleet(
            stack_env, settings, "twin", "set", "car1", "firmware=3000", "--expect-version", "0"
        )
        assert stale.returncode == 1
        assert stale.stderr.strip() == (
            "fleet: error: stale version: car1's desired state is at version 1, not 0; "
            "read it again (`fleet twin get car1`) and retry"
        )
        assert topic_total(settings, settings.topics.commands) == 1

        # A writer that read version 0 before the first command was applied: the projector
        # refuses it when it applies it, and records why beside the twins (`command_outcomes`).
        late = commands.command("car1", "firmware", 3000, expected_version=0)
        commands.send(settings, [late])
        found = wait_for(lambda: commands.outcomes(twins, [late]), 30, "the projector's verdict")
    entry = found[late["command_id"]]
    assert entry["outcome"] == "refused"
    assert entry["reason"] == "stale version: expected 0, the desired state is at version 1"
    twin = twins.find_one({"_id": "car1"})
    assert twin is not None
    assert twin["desired"]["firmware"]["value"] == 2000  # nothing of the refused one applied
    assert twin["desired_version"] == 1
    assert twin["delta"]["firmware"]["reported"] == 1000
    # ...and the refusal is in the change event of that revision.
    changes = read_all(settings, settings.topics.twin_changes, twin_change_codec())
    last = max(changes, key=lambda c: c["revision"])
    assert last["revision"] == twin["revision"]
    assert last["paths"] == ["commands"]  # nothing of the twin's state changed
    assert json.loads(last["values"])["commands"][-1]["reason"] == entry["reason"]


def test_bad_requests_are_refused_with_one_line_and_nothing_is_sent(
    stack_env: dict[str, str], fresh_settings: Settings
) -> None:
    unknown = fleet(stack_env, fresh_settings, "twin", "set", "no-such-car", "firmware=2000")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "fleet: error: unknown car 'no-such-car': it has no twin (it never reported)"
    )
    wrong = fleet(stack_env, fresh_settings, "twin", "set", "car1", "firmware=2.0.1")
    assert wrong.returncode == 2
    assert "firmware must be an integer, got '2.0.1'" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert topic_total(fresh_settings, fresh_settings.topics.commands) == 0


class Car:
    """An MQTT client logged in as a car, recording what it receives and its SUBACK codes."""

    def __init__(self, settings: Settings, username: str, password: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.subacks: list[list[Any]] = []
        self._lock = threading.Lock()
        self.client = clients.mqtt_client(
            settings,
            f"{username}-{uuid.uuid4().hex[:6]}",
            username,
            password,
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.append(codes)
        self.client.connect(settings.mqtt_host, settings.mqtt.port, keepalive=30)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, f"{username} connected")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, bytes(message.payload)))

    def subscribe(self, topic: str) -> list[Any]:
        before = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: len(self.subacks) > before, 10, f"SUBACK for {topic}")
        return self.subacks[before]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_car_cannot_read_another_cars_commands(settings: Settings) -> None:
    suffix = uuid.uuid4().hex[:6]
    car_a, car_b, password = f"acl-a-{suffix}", f"acl-b-{suffix}", uuid.uuid4().hex
    mosquitto = Mosquitto(settings)
    mosquitto.add_user(car_a, password)
    mosquitto.add_user(car_b, password)
    mosquitto.reload()

    def logged_in(user: str) -> Car | None:
        try:
            return Car(settings, user, password)
        except Exception:
            return None

    a = wait_for(lambda: logged_in(car_a), 15, "car A's account to be loaded")
    b = wait_for(lambda: logged_in(car_b), 15, "car B's account to be loaded")
    sender = Car(settings, settings.mqtt.username, settings.mqtt.password.get_secret_value())
    try:
        # Mosquitto 2 grants these subscriptions (SUBACK "Granted QoS 1") and then checks the
        # ACL on every message it would deliver: what counts is that nothing of B's arrives.
        a.subscribe(COMMAND_TOPIC_PREFIX + car_b)
        a.subscribe(COMMAND_TOPIC_PREFIX + "#")
        own = a.subscribe(COMMAND_TOPIC_PREFIX + car_a)
        b.subscribe(COMMAND_TOPIC_PREFIX + car_b)
        assert not own[0].is_failure
        # A car forging a command for another car is refused too.
        a.client.publish(COMMAND_TOPIC_PREFIX + car_b, b"forged", qos=1)

        # The command service's account sends B a command, then A one: messages from one
        # sender arrive in order, so once A has its own, B's would have reached A before.
        sender.client.publish(COMMAND_TOPIC_PREFIX + car_b, b"for B", qos=1)
        sender.client.publish(COMMAND_TOPIC_PREFIX + car_a, b"for A", qos=1)
        wait_for(lambda: (COMMAND_TOPIC_PREFIX + car_b, b"for B") in b.received, 10, "B's command")
        wait_for(lambda: a.received, 10, "A's command")
    finally:
        for client in (a, b, sender):
            client.close()
    # (A may get its own twice: its own topic and `#` both match it.)
    assert set(a.received) == {(COMMAND_TOPIC_PREFIX + car_a, b"for A")}
    assert b.received == [(COMMAND_TOPIC_PREFIX + car_b, b"for B")]  # not the forged one


def test_fleet_simulate_obey_commands(stack_env: dict[str, str], fresh_settings: Settings) -> None:
    ok = fleet(
        stack_env,
        fresh_settings,
        "simulate",
        "--cars",
        "3",
        "--steps",
        "2",
        "--obey-commands",
        "--update-delay",
        "0",
        "--update-failures",
        "0.5",
    )
    assert ok.returncode == 0, ok.stderr
    assert "commands: 0 heard, 0 cars updated, 0 failed, 0 went offline" in ok.stdout
    wrong = fleet(stack_env, fresh_settings, "simulate", "-o", "kafka", "--obey-commands")
    assert wrong.returncode == 2
    assert "cars hear commands over MQTT: use -o mqtt" in wrong.stderr
