"""Where `fleet simulate` sends a fleet's readings: Kafka (Avro), MQTT (JSON), or a CSV file.

Each sink takes whole steps (``ReadingBatch``) and counts what it ``sent`` (confirmed by the
server when there is a confirmation: Kafka delivery reports, MQTT PUBACKs at QoS 1) and its
``errors``.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import msgspec
import numpy as np
import paho.mqtt.client as mqtt

from fleet import clients
from fleet.contract import SENSOR_TYPES, SENSORS
from fleet.settings import Settings
from fleet.waiting import wait_for
from ingest.fast_avro import BatchEncoder
from ingest.mqtt_fast import install_bulk_reader, publish_packets, queue_raw
from ingest.simulator import ReadingBatch
from ingest.validation import TOPIC_PREFIX


class Sink(ABC):
    def __init__(self) -> None:
        self.sent = 0
        self.errors = 0
        self.submitted = 0

    @abstractmethod
    def send(self, batch: ReadingBatch, start: int = 0, stop: int | None = None) -> None:
        """Send cars ``start:stop`` of one step."""

    def poll(self) -> None:
        """Serve confirmations (between chunks)."""

    @abstractmethod
    def close(self, timeout: float = 60) -> None:
        """Wait for confirmations, then release connections."""


class KafkaSink(Sink):
    """Avro straight to the telemetry topic (load tests, training data)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.topic = settings.topics.telemetry
        self.producer = clients.kafka_producer(
            settings,
            **{
                "linger.ms": 50,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
                # A Python callback per event would cost more than encoding it: report
                # failures only, and count the rest as sent once flushed.
                "delivery.report.only.error": True,
            },
        )
        self.encoder = BatchEncoder()
        self._keys: dict[str, bytes] = {}
        self._encoded: tuple[ReadingBatch, list[bytes]] | None = None

    def _delivered(self, err: Any, _msg: Any) -> None:
        self.errors += err is not None

    def _update_sent(self) -> None:
        self.sent = self.submitted - len(self.producer) - self.errors

    def send(self, batch: ReadingBatch, start: int = 0, stop: int | None = None) -> None:
        if self._encoded is None or self._encoded[0] is not batch:
            self._encoded = (batch, self.encoder.encode(batch))  # once per step, not per chunk
        values = self._encoded[1]
        produce, callback, topic = self.producer.produce, self._delivered, self.topic
        keys = self._keys
        stop = len(batch) if stop is None else stop
        for car_id, value in zip(batch.car_ids[start:stop], values[start:stop], strict=True):
            key = keys.get(car_id) or keys.setdefault(car_id, car_id.encode())
            while True:
                try:
                    produce(topic, value, key, on_delivery=callback)
                    break
                except BufferError:
                    self.producer.poll(0.05)
        self.submitted += stop - start
        self.producer.poll(0)
        self._update_sent()

    def poll(self) -> None:
        self.producer.poll(0)
        self._update_sent()

    def close(self, timeout: float = 60) -> None:
        left = self.producer.flush(timeout)
        self.errors += left
        self._update_sent()


def failure_modes(batch: ReadingBatch, start: int, stop: int) -> list[list[str]]:
    """Per car of ``start:stop``, its active failure modes (as ``ReadingBatch.failure_modes``)."""
    names = list(batch.failures)
    active = np.column_stack([batch.failures[name][start:stop] for name in names])
    return [[names[j] for j in np.flatnonzero(row)] if row.any() else [] for row in active]


_PAYLOAD_FIELDS = (*SENSORS, "timestamp", "seq", "failure_occurred", "failure_modes")


def json_payloads(batch: ReadingBatch, start: int = 0, stop: int | None = None) -> list[bytes]:
    """The MQTT payloads of cars ``start:stop``: the seed's field names, plus ``timestamp`` (ms),
    ``seq`` and the ground-truth labels (``failure_occurred``, ``failure_modes``).

    msgspec writes floats (shortest round-trip form, as ``repr``) about 2x faster than
    formatting them in Python; the simulator's values are always finite."""
    stop = len(batch) if stop is None else stop
    columns: list[list[Any]] = [
        batch.sensors[name][start:stop].tolist()
        if SENSOR_TYPES[name] is float
        else batch.sensors[name][start:stop].astype(np.int64).tolist()
        for name in SENSORS
    ]
    count = stop - start
    columns.append([batch.event_time_ms] * count)
    columns.append([batch.seq] * count)
    columns.append(batch.failure_occurred[start:stop].tolist())
    columns.append(failure_modes(batch, start, stop))
    dumps, names = msgspec.json.encode, _PAYLOAD_FIELDS
    return [dumps(dict(zip(names, row, strict=True))) for row in zip(*columns, strict=True)]


class MqttSink(Sink):
    """JSON to ``vehicles/sensor/data/<car-id>`` through the gateway account, over a few
    connections (car i uses connection i mod n, so one car's readings stay in order)."""

    def __init__(
        self, settings: Settings, qos: int = 1, connections: int = 4, keep_infos: bool = False
    ) -> None:
        super().__init__()
        self.qos = qos
        # With keep_infos, one MQTTMessageInfo per publish (in order): which got a PUBACK.
        self.infos: list[mqtt.MQTTMessageInfo] | None = [] if keep_infos else None
        # paho numbers a connection's messages 1..65535: never have more than this many
        # awaiting PUBACK per connection (the broker's pace is the simulator's pace).
        self.max_pending = 10_000 * connections

        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self.clients: list[mqtt.Client] = []
        run = uuid.uuid4().hex[:6]
        for n in range(connections):
            client = clients.gateway_mqtt_client(settings, f"fleet-sim-{run}-{n}")
            client.max_inflight_messages_set(1000)
            client.max_queued_messages_set(0)
            client.on_publish = self._on_publish
            client.connect(settings.mqtt_host, settings.mqtt.port, keepalive=60)
            client.loop_start()
            self.clients.append(client)
        wait_for(lambda: all(c.is_connected() for c in self.clients), 15, "MQTT connections")

    def _on_publish(self, _c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            if reason.is_failure:
                self.errors += 1
            else:
                self.sent += 1
            self._acked.notify_all()

    def _wait_for_room(self, coming: int) -> None:
        if self.qos == 0:
            return
        with self._acked:
            while self.submitted + coming - self.sent - self.errors > self.max_pending:
                if not self._acked.wait(30):
                    return  # the broker is gone: publish() will report errors

    def send(self, batch: ReadingBatch, start: int = 0, stop: int | None = None) -> None:
        stop = len(batch) if stop is None else stop
        self._wait_for_room(stop - start)
        payloads = json_payloads(batch, start, stop)
        count = len(self.clients)
        for offset, (car_id, payload) in enumerate(
            zip(batch.car_ids[start:stop], payloads, strict=True)
        ):
            client = self.clients[(start + offset) % count]
            info = client.publish(TOPIC_PREFIX + car_id, payload, qos=self.qos)
            if self.infos is not None:
                self.infos.append(info)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                with self._lock:
                    self.errors += 1
            elif self.qos == 0:
                self.sent += 1
        self.submitted += stop - start

    def close(self, timeout: float = 60) -> None:
        if self.qos > 0:
            try:
                wait_for(lambda: self.sent + self.errors >= self.submitted, timeout, "every PUBACK")
            except TimeoutError:
                self.errors += self.submitted - self.sent - self.errors
        for client in self.clients:
            client.disconnect()
            client.loop_stop()


class CsvSink(Sink):
    """The seed's `car-sensor-data.csv` format: ``time`` (seconds), ``car``, the 18 sensors;
    with ``labels``, a trailing ``failure_occurred`` column (``true``/``false``)."""

    def __init__(self, path: Path, labels: bool = False) -> None:
        super().__init__()
        self.labels = labels
        self.file: TextIO = path.open("w", newline="")
        header = ["time", "car", *SENSORS] + (["failure_occurred"] if labels else [])
        self.file.write(",".join(header) + "\n")

    def send(self, batch: ReadingBatch, start: int = 0, stop: int | None = None) -> None:
        stop = len(batch) if stop is None else stop
        ms = batch.event_time_ms
        time_text = str(ms // 1000) if ms % 1000 == 0 else repr(ms / 1000)
        columns: list[list[str]] = [
            [time_text] * (stop - start),
            batch.car_ids[start:stop],
        ]
        for name in SENSORS:
            values = batch.sensors[name][start:stop]
            if SENSOR_TYPES[name] is float:
                # float32's shortest round-trip text, as the seed's file has it.
                columns.append(values.astype(np.float32).astype(str).tolist())
            else:
                columns.append([str(v) for v in values.astype(np.int64).tolist()])
        if self.labels:
            occurred = batch.failure_occurred[start:stop].tolist()
            columns.append(["true" if o else "false" for o in occurred])
        self.file.write("".join(",".join(row) + "\n" for row in zip(*columns, strict=True)))
        self.submitted += stop - start
        self.sent += stop - start

    def close(self, timeout: float = 60) -> None:
        self.file.close()


class BulkMqttSink(Sink):
    """Like :class:`MqttSink` (QoS 1, gateway account, car i on connection i mod n), but each
    chunk goes out as ready-made PUBLISH packets in one write per connection and PUBACKs are
    read in bulk (``ingest.mqtt_fast``): a tenth of paho's CPU per message, so one process
    offers a 100,000-car fleet's 10,000 msg/s and leaves the cores to the broker and bridges.

    ``status`` holds, per message sent (in order), 0 = awaiting PUBACK, 1 = PUBACKed,
    2 = refused by the broker (e.g. the ACL). Messages of a dropped connection stay 0: this
    sink does not resend them (the clean session is gone), so they count as errors at close.
    """

    def __init__(self, settings: Settings, connections: int = 2) -> None:
        super().__init__()
        self.status = bytearray()
        self.sent_at: list[float] = []  # wall clock of each chunk's write, per message
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._topics: dict[str, bytes] = {}
        self.clients: list[mqtt.Client] = []
        self._pending: list[dict[int, int]] = []  # per connection: message id -> index
        self._next_mid: list[int] = []
        self._room: list[int] = []  # per connection: the broker's Receive Maximum
        run = uuid.uuid4().hex[:6]
        for n in range(connections):
            client = clients.gateway_mqtt_client(settings, f"fleet-sim-{run}-{n}")
            self._pending.append({})
            self._next_mid.append(1)
            self._room.append(0)
            client.on_connect = partial(self._on_connect, n)
            install_bulk_reader(client, on_pubacks=partial(self._on_pubacks, n))
            client.connect(settings.mqtt_host, settings.mqtt.port, keepalive=60)
            client.loop_start()
            self.clients.append(client)
        wait_for(lambda: all(self._room), 15, "MQTT connections")

    def _on_connect(self, n: int, _c: Any, _u: Any, _f: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            with self._lock:
                # After a reconnect, what the old connection had in flight will never be
                # acknowledged (clean session, not resent): count it as errors now.
                self.errors += len(self._pending[n])
                self._pending[n].clear()
                self._room[n] = min(getattr(props, "ReceiveMaximum", 65535), 65_000)
                self._acked.notify_all()

    def _on_pubacks(self, n: int, pubacks: list[tuple[int, int]]) -> None:
        with self._lock:
            pending, status = self._pending[n], self.status
            for mid, reason in pubacks:
                index = pending.pop(mid, None)
                if index is None:
                    continue
                if reason >= 0x80:
                    status[index] = 2
                    self.errors += 1
                else:
                    status[index] = 1
                    self.sent += 1
            self._acked.notify_all()

    def _mids(self, n: int, indexes: list[int]) -> list[int]:
        """Message ids for new messages (by index) on connection ``n`` (waits for room)."""
        count = len(indexes)
        with self._acked:
            pending = self._pending[n]
            while len(pending) + count > self._room[n]:
                if not self._acked.wait(30):
                    raise TimeoutError("the broker stopped acknowledging publishes")
            mids, mid = [], self._next_mid[n]
            for index in indexes:
                while mid in pending:
                    mid = mid % 65535 + 1
                pending[mid] = index
                mids.append(mid)
                mid = mid % 65535 + 1
            self._next_mid[n] = mid
        return mids

    def send(self, batch: ReadingBatch, start: int = 0, stop: int | None = None) -> None:
        stop = len(batch) if stop is None else stop
        payloads = json_payloads(batch, start, stop)
        topics = self._topics
        names = [
            topics.get(c) or topics.setdefault(c, (TOPIC_PREFIX + c).encode())
            for c in batch.car_ids[start:stop]
        ]
        first = len(self.status)
        self.status.extend(bytes(stop - start))
        count = len(self.clients)
        for n, client in enumerate(self.clients):
            offset = (n - start) % count  # car i goes on connection i mod count
            mine = range(offset, stop - start, count)
            if not mine:
                continue
            mids = self._mids(n, [first + k for k in mine])
            queue_raw(
                client,
                publish_packets(
                    [names[k] for k in mine], [payloads[k] for k in mine], mids, v5=True
                ),
            )
        self.sent_at.extend([time.time()] * (stop - start))
        self.submitted += stop - start

    def close(self, timeout: float = 60) -> None:
        try:
            wait_for(lambda: self.sent + self.errors >= self.submitted, timeout, "every PUBACK")
        except TimeoutError:
            self.errors += self.submitted - self.sent - self.errors
        for client in self.clients:
            client.disconnect()
            client.loop_stop()
