"""Simulated cars that obey commands: `fleet simulate --obey-commands`.

The simulator's gateway account hears `vehicles/commands/+` (the ACL lets it read every car's
commands; a real car reads only its own). A car that hears a desired value installs it for
``delay`` seconds, then reports it in every later reading, like a firmware update. As real
cars do, some never finish: a ``failure_share`` of the cars fails the update (keeps reporting
the old value) and an ``offline_share`` goes silent on receiving it and never comes back. Which
cars those are is a fixed function of the seed and the car id (``fate``), so a test can
predict them.

``apply(batch)`` is called on every simulated step before it is sent (the hook of
``ingest.simulate.run_simulation``): it overrides the reported values of updated cars and drops
the readings of cars that went offline.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import paho.mqtt.client as mqtt

from fleet import clients
from fleet.contract import COMMAND_TOPIC_PREFIX, DESIRED_PROPERTIES
from fleet.logs import get_logger
from fleet.settings import Settings
from fleet.waiting import wait_for
from ingest.simulator import FIRMWARE_CURRENT, ReadingBatch

log = get_logger("ingest.car_commands")
Fate = Literal["ok", "fail", "offline"]


@dataclass(frozen=True)
class ObeyConfig:
    delay: float = 5.0  # wall seconds from hearing a command to reporting the new value
    failure_share: float = 0.0  # cars whose update fails
    offline_share: float = 0.0  # cars that go offline on hearing a command, for good
    seed: int = 42

    def __post_init__(self) -> None:
        if self.delay < 0 or not 0 <= self.failure_share + self.offline_share <= 1:
            raise ValueError("delay must be >= 0 and the shares must add up to at most 1")


def fate(car_id: str, config: ObeyConfig) -> Fate:
    """What happens when this car gets a command (fixed by the seed and the car id)."""
    draw = random.Random(f"{config.seed}:{car_id}").random()
    if draw < config.failure_share:
        return "fail"
    if draw < config.failure_share + config.offline_share:
        return "offline"
    return "ok"


@dataclass
class _Update:
    due: float
    version: int
    values: dict[str, Any]  # sensor -> value


@dataclass
class CarCommands:
    """The command side of a simulated fleet; thread-safe (MQTT delivers on its own thread)."""

    car_ids: list[str]
    config: ObeyConfig = field(default_factory=ObeyConfig)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.index = {car: i for i, car in enumerate(self.car_ids)}
        self.heard = 0
        self.versions: dict[str, int] = {}  # newest version heard per car
        self.pending: dict[str, _Update] = {}
        self.overrides: dict[str, dict[str, Any]] = {}  # car -> sensor -> value it reports
        self.updated: set[str] = set()
        self.failed: set[str] = set()
        self.offline: set[str] = set()
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None

    # --- hearing commands ------------------------------------------------------------------

    def receive(self, car_id: str, payload: bytes | bytearray) -> None:
        """One command message for ``car_id`` (see twin/command_service.py for its shape)."""
        if car_id not in self.index:
            return  # another fleet's car
        try:
            message = json.loads(payload)
            version = int(message["version"])
            desired = {
                DESIRED_PROPERTIES[name]: value
                for name, value in message["desired"].items()
                if name in DESIRED_PROPERTIES
            }
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("bad command ignored", car=car_id, error=str(exc))
            return
        with self._lock:
            self.heard += 1
            if version <= self.versions.get(car_id, 0) or car_id in self.offline:
                return  # heard before (at-least-once delivery), or gone for good
            self.versions[car_id] = version
            outcome = fate(car_id, self.config)
            if outcome == "offline":
                self.offline.add(car_id)
                self.pending.pop(car_id, None)
            elif outcome == "fail":
                self.failed.add(car_id)
            else:
                self.pending[car_id] = _Update(self.clock() + self.config.delay, version, desired)

    # --- the hook on every step ------------------------------------------------------------

    def apply(self, batch: ReadingBatch) -> ReadingBatch:
        """Report installed updates and drop offline cars from one simulated step."""
        now = self.clock()
        with self._lock:
            for car_id, update in list(self.pending.items()):
                if update.due <= now:
                    self.overrides.setdefault(car_id, {}).update(update.values)
                    self.updated.add(car_id)
                    del self.pending[car_id]
            overrides = {car: dict(values) for car, values in self.overrides.items()}
            offline = set(self.offline)
        for car_id, values in overrides.items():
            i = self.index[car_id]
            for sensor, value in values.items():
                batch.sensors[sensor][i] = value
                if sensor == "control_unit_firmware":  # keep the ground-truth label in step
                    batch.failures["firmware"][i] = value < FIRMWARE_CURRENT
        return without(batch, offline) if offline else batch

    # --- MQTT ------------------------------------------------------------------------------

    def connect(self, settings: Settings) -> None:
        """Hear every car's commands through the gateway account (QoS 1)."""
        client = clients.gateway_mqtt_client(settings, f"fleet-sim-commands-{uuid.uuid4().hex[:6]}")
        subscribed = threading.Event()
        topic = COMMAND_TOPIC_PREFIX + "+"

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
            c.subscribe(topic, qos=1)

        def on_subscribe(_c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
            if all(not code.is_failure for code in codes):
                subscribed.set()

        def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
            self.receive(message.topic[len(COMMAND_TOPIC_PREFIX) :], message.payload)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(settings.mqtt_host, settings.mqtt.port, keepalive=30)
        client.loop_start()
        self._client = client
        wait_for(subscribed.is_set, 15, f"the subscription to {topic}")

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()


def without(batch: ReadingBatch, car_ids: Iterable[str]) -> ReadingBatch:
    """The step without these cars' readings."""
    gone = set(car_ids)
    keep = np.array([car not in gone for car in batch.car_ids], dtype=bool)
    return ReadingBatch(
        event_time_ms=batch.event_time_ms,
        seq=batch.seq,
        car_ids=[car for car, kept in zip(batch.car_ids, keep.tolist(), strict=True) if kept],
        sensors={name: values[keep] for name, values in batch.sensors.items()},
        failures={mode: active[keep] for mode, active in batch.failures.items()},
        onsets={mode: onset[keep] for mode, onset in batch.onsets.items()},
    )
