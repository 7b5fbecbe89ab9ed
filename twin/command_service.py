"""`fleet commands run`: send each accepted desired-state change to its car over MQTT.

A thin loop: poll twin-change events -> keep those that changed a `desired.*` path -> publish
one JSON message per car to `vehicles/commands/<car-id>` at QoS 1 -> wait for every PUBACK ->
commit. Following the twin changes rather than the raw command topic means cars only ever hear
commands the projector accepted (a stale one is refused on the twin and never sent).

At-least-once: after a crash, or for a snapshot change, a car may hear the same desired state
twice; cars apply a message only if its `version` is above the one they applied last.

Payload: {"car_id": "car7", "version": 3, "revision": 1234, "desired": {"firmware": 2000}}
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, Message, TopicPartition
from tenacity import Retrying, retry_if_exception_type, wait_exponential

from fleet import clients
from fleet.avro import AvroDecodeError, twin_change_codec
from fleet.contract import COMMAND_TOPIC_PREFIX
from fleet.logs import get_logger
from fleet.service import Shutdown
from fleet.settings import Settings
from fleet.waiting import wait_for

log = get_logger("twin.command_service")


def car_message(change: Mapping[str, Any]) -> dict[str, Any] | None:
    """The MQTT message for one twin-change event, or None if it changed no desired value."""
    if not any(path.startswith("desired.") for path in change["paths"]):
        return None  # most changes are readings: skip them without parsing their values
    values = json.loads(change["values"])
    desired = {
        path.split(".", 1)[1]: value["value"]
        for path, value in values.items()
        if path.startswith("desired.") and value is not None
    }
    if not desired:
        return None
    version = values.get("desired_version")
    if version is None:  # not in this change: the newest of the changed properties has it
        version = max(int(values[f"desired.{name}"]["version"]) for name in desired)
    return {
        "car_id": change["car_id"],
        "version": int(version),
        "revision": int(change["revision"]),
        "desired": desired,
    }


class CommandService:
    """``CommandService(settings).run(shutdown)``: twin changes -> MQTT, until shutdown."""

    def __init__(self, settings: Settings, **consumer_overrides: Any) -> None:
        self.settings = settings
        self.codec = twin_change_codec()
        self.consumer_overrides = consumer_overrides
        self.published = 0
        self._acked = threading.Condition()
        self._done: set[int] = set()  # message ids the broker acknowledged
        self.mqtt = clients.mqtt_client(
            settings, client_id=f"fleet-commands-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.mqtt.on_publish = self._on_publish

    def _on_publish(self, _c: Any, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        with self._acked:
            self._done.add(mid)
            self._acked.notify_all()

    def publish(self, messages: Sequence[dict[str, Any]], timeout: float = 60.0) -> None:
        """Publish at QoS 1 and return once the broker acknowledged every message."""
        if not messages:
            return
        # paho reconnects on its own; wait for it rather than fail the batch.
        wait_for(self.mqtt.is_connected, timeout, "the MQTT connection")
        with self._acked:
            self._done.clear()
        mids = set()
        for message in messages:
            info = self.mqtt.publish(
                COMMAND_TOPIC_PREFIX + message["car_id"], json.dumps(message), qos=1
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"MQTT publish failed: {mqtt.error_string(info.rc)}")
            mids.add(info.mid)
        with self._acked:
            if not self._acked.wait_for(lambda: mids <= self._done, timeout):
                raise TimeoutError(f"{len(mids - self._done)} commands not acknowledged by MQTT")
            self._done.clear()
        self.published += len(messages)

    def _publish_until_done(self, messages: list[dict[str, Any]], shutdown: Shutdown) -> None:
        """Publish a batch, again and again while the broker is away (nothing is committed
        meanwhile, so a stop here only means the batch is sent again later)."""

        def pause(seconds: float) -> None:
            shutdown.wait(seconds)  # wakes early on shutdown

        retrying = Retrying(
            retry=retry_if_exception_type((ConnectionError, TimeoutError)),
            wait=wait_exponential(multiplier=0.5, max=30),
            stop=lambda _state: shutdown.requested,
            sleep=pause,
            before_sleep=lambda state: log.warning(
                "MQTT away, retrying",
                error=str(state.outcome.exception()) if state.outcome else None,
            ),
            reraise=True,
        )
        retrying(self.publish, messages)

    def messages_of(self, batch: Sequence[Message]) -> list[dict[str, Any]]:
        out = []
        for message in batch:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka", error=str(error))
                continue
            try:
                change = self.codec.decode(message.value() or b"")
            except AvroDecodeError as exc:
                log.error("undecodable twin change skipped", error=str(exc))
                continue
            car = car_message(change)
            if car is not None:
                out.append(car)
        return out

    def run(self, shutdown: Shutdown) -> int:
        self.mqtt.connect(self.settings.mqtt_host, self.settings.mqtt.port, keepalive=30)
        self.mqtt.loop_start()
        consumer = clients.kafka_consumer(
            self.settings, self.settings.groups.commands, **self.consumer_overrides
        )
        consumer.subscribe([self.settings.topics.twin_changes])
        log.info("sending commands", topic=self.settings.topics.twin_changes)
        try:
            wait_for(self.mqtt.is_connected, 15, "the MQTT connection")
            while not shutdown.requested:
                batch = consumer.consume(num_messages=1000, timeout=0.5)
                if not batch:
                    continue
                self._publish_until_done(self.messages_of(batch), shutdown)
                offsets: dict[tuple[str, int], int] = {}
                for message in batch:
                    if message.error() is None:
                        offsets[(str(message.topic()), message.partition() or 0)] = (
                            message.offset() or 0
                        )
                if offsets:
                    consumer.commit(
                        offsets=[TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()],
                        asynchronous=False,
                    )
        finally:
            consumer.close()
            self.mqtt.disconnect()
            self.mqtt.loop_stop()
            log.info("stopped", published=self.published)
        return self.published
