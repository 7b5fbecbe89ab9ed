"""Shared helpers of the ingest tests: readings, an MQTT publisher, and a Kafka topic reader."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import Message

from fleet import clients
from fleet.contract import PHYSICAL_RANGES, SENSOR_TYPES
from fleet.settings import Settings
from fleet.waiting import wait_for
from ingest.validation import (
    Reading,
    Rejected,
    load_json,
    reading_payload,
    validate_fields,
)

#: Test bridges' MQTT sessions outlive them only briefly: a dead session of another test's
#: group would otherwise keep queueing every later test's readings on the shared broker.
TEST_SESSION_EXPIRY = 60


def short_lived(settings: Settings) -> Settings:
    """Settings whose bridge session expires soon after the bridge stops."""
    ingest = settings.ingest.model_copy(update={"bridge_session_expiry": TEST_SESSION_EXPIRY})
    return settings.model_copy(update={"ingest": ingest})


def valid_sensors(i: int = 0) -> dict[str, Any]:
    """A plausible reading (every sensor inside its physical range)."""
    sensors: dict[str, Any] = {}
    for name, kind in SENSOR_TYPES.items():
        low, high = PHYSICAL_RANGES[name]
        sensors[name] = kind(low + (high - low) * ((i % 7) + 1) / 10)
    return sensors


def valid_payload(i: int = 0, **extra: Any) -> bytes:
    return reading_payload(valid_sensors(i), **extra)


class Publisher:
    """A QoS-1 MQTT publisher that records which messages the broker acknowledged (PUBACK)."""

    def __init__(
        self,
        settings: Settings,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if username is None:
            username = settings.mqtt.gateway_username
            password = settings.mqtt.gateway_password.get_secret_value()
        self.published = 0
        self.acked: list[int] = []
        self.refused: list[int] = []
        self._lock = threading.Lock()
        self.client = clients.mqtt_client(
            settings,
            client_id=f"pub-{uuid.uuid4().hex[:8]}",
            username=username,
            password=password,
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self.reasons: list[Any] = []
        self.client.on_connect = self._on_connect
        self.client.connect(settings.mqtt_host, settings.mqtt.port)
        self.client.loop_start()
        if not self.connected.wait(10) or self.reasons[0].is_failure:
            self.close()
            raise ConnectionRefusedError(f"MQTT connect as {username}: {self.reasons}")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reasons.append(reason)
        self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            (self.refused if reason.is_failure else self.acked).append(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        self.published += 1
        return info.mid

    def wait_all(self, count: int | None = None, timeout: float = 60) -> None:
        """Until the broker answered ``count`` publishes (default: all so far)."""
        count = self.published if count is None else count
        wait_for(
            lambda: len(self.acked) + len(self.refused) >= count,
            timeout,
            f"{count} PUBACKs",
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class TopicReader:
    """Reads a whole topic from the beginning, accumulating messages."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = clients.kafka_consumer(
            settings, group_id=f"test-{uuid.uuid4().hex[:8]}", **{"session.timeout.ms": 6000}
        )
        self.consumer.subscribe([topic])
        self.messages: list[Message] = []

    def poll(self) -> list[Message]:
        for message in self.consumer.consume(num_messages=5000, timeout=0.2):
            assert message.error() is None, message.error()
            self.messages.append(message)
        return self.messages

    def wait_count(self, count: int, timeout: float = 60) -> list[Message]:
        wait_for(lambda: len(self.poll()) >= count, timeout, f"{count} messages", interval=0)
        return self.messages

    def close(self) -> None:
        self.consumer.close()


def hostile_payloads() -> list[tuple[bytes, str]]:
    """Payloads from the hostile-input catalog of issue 16 that once crashed or fooled the
    bridge, each with the dead-letter reason it now gets."""
    valid = valid_payload()
    return [
        # An integer literal too large for a float (float() raised OverflowError).
        (valid.replace(b'"speed":', b'"speed":1' + b"0" * 400 + b',"x":'), "out_of_range"),
        # An unknown field nested 3,000 deep (msgspec raised RecursionError).
        (valid[:-1] + b',"x":' + b"[" * 3000 + b"]" * 3000 + b"}", "too_deep"),
        # Invalid UTF-8 in an unknown field's key and value (was accepted).
        (valid[:-1] + b',"x\xff":"\xfe"}', "not_json"),
        # A repeated key (the last one won, so a parser-dependent reading passed).
        (b'{"speed":-5,' + valid[1:], "duplicate_field"),
        # UTF-16 with a byte-order mark (was accepted).
        ("\ufeff".encode("utf-16-le") + valid.decode().encode("utf-16-le"), "not_json"),
    ]


def named_reason_path(payload: bytes) -> Reading | Rejected:
    """The reference the fast path is held to: the standard library's parser under the
    contract's JSON rules, and the per-field checks, nothing else."""
    data = load_json(payload)
    if isinstance(data, Rejected):
        return data
    if not isinstance(data, dict):
        return Rejected("not_object", "")
    return validate_fields(data)
