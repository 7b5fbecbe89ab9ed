"""The MQTT-to-Kafka bridge: every QoS-1 reading lands in Kafka before the broker hears "got it".

Flow: paho's network thread hands each message to a queue; the main thread takes batches,
validates them (``ingest.validation``, pure), stamps event time and sequence, encodes Avro in
bulk and produces to the telemetry topic (or the original bytes to the dead-letter topic).
Only when Kafka confirms a message does its PUBACK go to the broker (paho manual ack).

Guarantees and how they hold:

* No loss. The session is persistent (MQTT 5, clean start off, session expiry), and a message
  is acknowledged only after Kafka has it. If the bridge dies, the broker keeps the unacked
  messages and everything published meanwhile, and redelivers on reconnect (duplicates are
  possible; consumers are idempotent).
* Bounded memory. The bridge tells the broker its Receive Maximum (``bridge_max_in_flight``):
  the broker never sends more unacknowledged messages than that. When Kafka is slow or down,
  acks stop, so intake stops, and the broker queues; when Kafka returns, intake resumes.
  QoS-0 messages are not flow-controlled by MQTT, so past the same bound the network thread
  waits (TCP backpressure).
* Reconciliation: every message taken becomes exactly one Kafka message, telemetry or dead
  letter, so received = produced + dead-lettered once in-flight is zero.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter, Gauge, Histogram

from fleet import clients
from fleet.avro import telemetry_codec
from fleet.logs import get_logger
from fleet.service import Shutdown
from fleet.settings import Settings
from ingest.deadletter import dead_letter
from ingest.fast_avro import BatchEncoder
from ingest.mqtt_fast import Publish, install_bulk_reader, puback_packets, queue_raw
from ingest.sequence import Sequencer
from ingest.validation import (
    POISON,
    RETAINED,
    TOPIC,
    Rejected,
    WireReading,
    car_id_from_topic,
    decode_valid,
    parse_payload,
)

log = get_logger("ingest.bridge")

RECEIVED = Counter("fleet_bridge_received_total", "MQTT messages taken by the bridge")
PRODUCED = Counter("fleet_bridge_produced_total", "readings confirmed by Kafka")
DEAD_LETTERED = Counter(
    "fleet_bridge_dead_lettered_total", "rejected messages confirmed in the DLQ", ["reason"]
)
IN_FLIGHT = Gauge("fleet_bridge_in_flight", "messages taken but not yet confirmed by Kafka")
LATENCY = Histogram(
    "fleet_bridge_delivery_seconds",
    "from MQTT receipt to Kafka confirmation",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass(slots=True)
class Chunk:
    """What one read of paho's network thread handed over."""

    publishes: list[Publish]
    generation: int  # the MQTT connection it came on: acks only go back on that one
    received_at: float  # wall clock, seconds


class Pending:
    """One batch's Kafka messages (a reading or a dead letter per MQTT message). Their PUBACKs
    go to the broker together, once Kafka has confirmed every one of them."""

    __slots__ = (
        "acks",
        "bridge",
        "dead",
        "dropped",
        "produced",
        "received_at",
        "remaining",
        "sealed",
    )

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.remaining = 0  # produced, not yet confirmed
        self.sealed = False  # every message of the batch has been produced (or dropped)
        self.dropped = False  # one was not produced (shutting down): never ack this batch
        self.produced = 0
        self.dead: dict[str, int] = {}
        self.acks: list[tuple[int, int]] = []  # (generation, message id) of QoS-1 messages
        self.received_at: list[tuple[float, int]] = []  # (receive time, messages) per chunk

    def delivered(self, err: KafkaError | None, msg: Message, headers: Any = None) -> None:
        """librdkafka's delivery report (on the main thread, inside ``poll``); ``headers``:
        the message's own, which a delivery report does not carry back."""
        bridge = self.bridge
        if err is not None:
            if err.fatal():
                bridge._fatal = err
                return
            # Not confirmed, so not acked: the main loop produces it again.
            log.warning("kafka delivery failed; retrying", error=str(err))
            bridge.stats.retried += 1
            topic, value = msg.topic(), msg.value()
            assert topic is not None and value is not None  # set on every produced message
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and value:
                # Only a dead letter can be this large (a topic with a smaller limit than
                # ours): retrying it as it is would hold the bridge forever.
                value, headers = _without_payload(headers)
            bridge._retry.append((self, topic, value, msg.key(), headers))
            return
        self.remaining -= 1
        if self.remaining == 0 and self.sealed:
            bridge._confirmed(self)


def _without_payload(headers: Any) -> tuple[bytes, Any]:
    """A message Kafka refuses as too large, sent again without its value (a dead letter's
    headers still tell its reason, length and digest)."""
    return b"", [*(headers or []), ("payload_omitted", b"too large for the topic")]


@dataclass
class Stats:
    """Plain counters (the Prometheus ones are process-wide; these are this bridge's)."""

    received: int = 0
    produced: int = 0
    dead_lettered: int = 0
    acked: int = 0
    retried: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return self.received - self.produced - self.dead_lettered


class KafkaFatal(RuntimeError):
    """The idempotent producer hit a fatal error; restart (unacked messages are redelivered)."""


class Bridge:
    """``Bridge(settings).run(shutdown)``; ``start()``/``stop()`` run it on a thread (tests)."""

    def __init__(
        self,
        settings: Settings,
        client_id: str | None = None,
        producer: Producer | None = None,
    ) -> None:
        self.settings = settings
        ingest = settings.ingest
        self.client_id = (
            client_id or ingest.bridge_client_id or f"fleet-bridge-{socket.gethostname()}"
        )
        self.max_in_flight = ingest.bridge_max_in_flight
        self.batch_size = ingest.bridge_batch_size
        self.flush_timeout = 30.0
        self.max_payload = ingest.max_payload_bytes
        self.reserved = frozenset({settings.mqtt.username, settings.mqtt.gateway_username})
        self.subscription = f"$share/{settings.groups.bridge}/{ingest.bridge_topic_filter}"
        self.encoder = BatchEncoder(telemetry_codec())
        self.sequencer = Sequencer()
        self.stats = Stats()
        self.producer = producer or clients.kafka_producer(
            settings,
            **{
                # Never give up on a reading: retry until Kafka is back (0 = no timeout).
                "message.timeout.ms": 0,
                "queue.buffering.max.messages": 200_000,
                # Fewer, fuller requests: the broker's cost is per request, not per message.
                "linger.ms": ingest.bridge_linger_ms,
            },
        )
        self._queue: queue.SimpleQueue[Chunk] = queue.SimpleQueue()
        self._cars: dict[bytes, str | Rejected] = {}  # MQTT topic -> car id (or why not)
        self._room = threading.Condition()
        self._generation = 0
        self._stopping = False
        self._subscribed = threading.Event()
        self._fatal: KafkaError | None = None
        self._thread: threading.Thread | None = None
        self._shutdown = Shutdown()
        self._error: BaseException | None = None
        self._retry: list[tuple[Pending, str, bytes, bytes | None, Any]] = []
        self._run_shutdown: Shutdown | None = None
        self._last_warning = 0.0
        self.client = self._mqtt_client()

    # --- MQTT side (paho's network thread) ---

    def _mqtt_client(self) -> mqtt.Client:
        client = clients.mqtt_client(
            self.settings, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        # Readings are cut out of the socket in bulk and handed over one list per read;
        # paho's per-message path cost more CPU than all of validation and encoding.
        install_bulk_reader(client, on_publishes=self._on_publishes)
        return client

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("mqtt connect refused", reason=str(reason), client_id=self.client_id)
            return
        self._generation += 1
        log.info(
            "mqtt connected",
            client_id=self.client_id,
            session_present=bool(flags.session_present),
            subscription=self.subscription,
        )
        # Subscribing again on a resumed session is harmless and covers an expired one.
        # Retained readings: never sent for the subscription itself (else every restart
        # would ingest them again), and flagged when published live, so they can be refused.
        options = SubscribeOptions(
            qos=1,
            retainAsPublished=True,
            retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND,
        )
        client.subscribe(self.subscription, options=options)

    def _on_subscribe(self, *_args: Any) -> None:
        # Readings published before the first subscription are not kept (MQTT semantics):
        # this line tells operators and tests that the bridge now holds a session for them.
        log.info("subscribed", subscription=self.subscription)
        self._subscribed.set()

    def _on_disconnect(self, *args: Any) -> None:
        if not self._stopping:
            log.warning("mqtt disconnected; reconnecting", reason=str(args[3]))

    def _on_publishes(self, publishes: list[Publish]) -> None:
        if self._stopping:
            return  # not acked: the broker redelivers them to the next session
        if self.stats.in_flight >= self.max_in_flight:
            # Only QoS 0 gets here (the broker honours our Receive Maximum for QoS 1).
            with self._room:
                while self.stats.in_flight >= self.max_in_flight and not self._stopping:
                    self._room.wait(0.5)
        count = len(publishes)
        self.stats.received += count
        RECEIVED.inc(count)
        IN_FLIGHT.inc(count)
        self._queue.put(Chunk(publishes, self._generation, time.time()))

    # --- Kafka side (the main thread) ---

    def _take(self, wait: float) -> list[Chunk]:
        try:
            chunks = [self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()]
        except queue.Empty:
            return []
        taken = len(chunks[0].publishes)
        while taken < self.batch_size:
            try:
                chunk = self._queue.get_nowait()
            except queue.Empty:
                break
            chunks.append(chunk)
            taken += len(chunk.publishes)
        return chunks

    def _car_id(self, topic: bytes) -> str | Rejected:
        known = self._cars.get(topic)
        if known is None:
            try:
                known = car_id_from_topic(topic.decode(), self.reserved)
            except UnicodeDecodeError:
                known = Rejected(TOPIC, "topic is not UTF-8")
            if len(self._cars) >= 1_000_000:  # bounded: a flood of odd topics cannot grow it
                self._cars.clear()
            self._cars[topic] = known
        return known

    def _decode(self, publish: Publish) -> tuple[str, WireReading] | Rejected:
        """One message: (car id, reading), or why it is refused."""
        if publish.retain:
            # A retained reading is one car's state of some moment, replayed to whoever
            # subscribes: it is not a new reading, and restarts must never create readings.
            return Rejected(RETAINED, "retained publish: readings are events, not state")
        car_id = self._car_id(publish.topic)
        if isinstance(car_id, Rejected):
            return car_id
        payload = publish.payload
        wire = decode_valid(payload) if len(payload) <= self.max_payload else None
        if wire is None:  # the slow path: converts, or says why not
            reading = parse_payload(payload, self.max_payload)
            if isinstance(reading, Rejected):
                return reading
            wire = WireReading(
                tuple(reading.sensors.values()),
                reading.timestamp_ms,
                reading.seq,
                reading.failure_occurred,
                reading.failure_modes,
            )
        return car_id, wire

    def _handle(self, chunks: list[Chunk]) -> None:
        """Validate, stamp, encode and produce one batch (one Kafka message per input)."""
        pending = Pending(self)
        accepted: list[tuple[Publish, str, WireReading, int, int]] = []
        next_seq = self.sequencer.next
        for chunk in chunks:
            received_ms = int(chunk.received_at * 1000)
            received_us = int(chunk.received_at * 1_000_000)
            pending.received_at.append((chunk.received_at, len(chunk.publishes)))
            generation = chunk.generation
            for publish in chunk.publishes:
                if publish.qos:
                    pending.acks.append((generation, publish.mid))
                try:
                    outcome = self._decode(publish)
                except Exception as exc:  # validation is total; this is the last line anyway
                    self._poison(pending, publish, exc, received_ms)
                    continue
                if isinstance(outcome, Rejected):
                    self._dead_letter(pending, publish, outcome, received_ms)
                    continue
                car_id, wire = outcome
                seq = next_seq(car_id, wire.seq, received_us)
                accepted.append((publish, car_id, wire, wire.timestamp_ms or received_ms, seq))
        if accepted:
            topic = self.settings.topics.telemetry
            produce, delivered = self.producer.produce, pending.delivered
            for (_publish, car_id, *_rest), value in self._encode(pending, accepted):
                try:
                    produce(topic, value, car_id, on_delivery=delivered)
                    pending.remaining += 1
                except (BufferError, KafkaException):  # full, or no topic: wait for room
                    self._produce(pending, topic, value, car_id.encode(), None)
                pending.produced += 1
        pending.sealed = True
        if pending.remaining == 0:  # (confirmed already, e.g. during a wait for room)
            self._confirmed(pending)

    def _encode_rows(self, rows: list[tuple[Publish, str, WireReading, int, int]]) -> list[bytes]:
        return self.encoder.encode_rows(
            [row[1] for row in rows],
            [row[3] for row in rows],
            [row[4] for row in rows],
            np.array([row[2].sensors for row in rows], dtype=np.float64),
            [(row[2].failure_occurred, row[2].failure_modes) for row in rows],
        )

    def _encode(
        self, pending: Pending, rows: list[tuple[Publish, str, WireReading, int, int]]
    ) -> list[tuple[tuple[Publish, str, WireReading, int, int], bytes]]:
        """Avro for the accepted rows, in bulk; should the bulk encoder ever fail, row by row,
        so only the row that breaks it is dead-lettered (as ``poison``)."""
        try:
            return list(zip(rows, self._encode_rows(rows), strict=True))
        except Exception:
            log.exception("bulk encoding failed; encoding the batch row by row")
        encoded = []
        for row in rows:
            try:
                encoded.append((row, self._encode_rows([row])[0]))
            except Exception as exc:
                self._poison(pending, row[0], exc, row[3])
        return encoded

    def _poison(self, pending: Pending, publish: Publish, exc: Exception, received_ms: int) -> None:
        """A message that made the bridge's own code fail: dead-lettered with the error class,
        never retried (the failure is deterministic) and never allowed to stop the bridge."""
        log.error("message broke the bridge; dead-lettered as poison", error=repr(exc)[:300])
        detail = f"{type(exc).__name__}: {str(exc)[:300]}"
        self._dead_letter(
            pending, publish, Rejected(POISON, detail), received_ms, error=type(exc).__name__
        )

    def _dead_letter(
        self,
        pending: Pending,
        publish: Publish,
        rejected: Rejected,
        received_ms: int,
        **extra: str,
    ) -> None:
        try:
            topic = publish.topic.decode()
        except UnicodeDecodeError:
            topic = ""  # the reason says so; the header cannot carry the original
        value, headers = dead_letter(
            rejected,
            publish.payload,
            self.settings.ingest.dead_letter_payload_bytes,
            "mqtt",
            received_ms,
            mqtt_topic=topic,
            **extra,
        )
        self._produce(pending, self.settings.topics.dead_letters, value, None, headers)
        pending.dead[rejected.reason] = pending.dead.get(rejected.reason, 0) + 1

    def _produce(
        self,
        pending: Pending,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Any,
        *,
        again: bool = False,
    ) -> None:
        """Produce one message of ``pending`` (``again``: one whose delivery failed)."""
        while True:
            try:
                report = (
                    partial(pending.delivered, headers=headers) if headers else pending.delivered
                )
                self.producer.produce(topic, value, key, headers=headers, on_delivery=report)
                pending.remaining += not again
                return
            except BufferError:  # librdkafka's queue is full: serve callbacks, then retry
                self.producer.poll(0.1)
            except KafkaException as exc:  # e.g. the topic is missing: wait for it
                if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE and value:
                    value, headers = _without_payload(headers)
                    continue
                if self._stopping or (self._run_shutdown and self._run_shutdown.requested):
                    pending.dropped = True  # never acked: the broker redelivers the batch
                    return
                now = time.monotonic()
                if now - self._last_warning > 10:
                    log.warning("kafka refuses readings; holding them", error=str(exc))
                    self._last_warning = now
                self.producer.poll(0.5)

    def _confirmed(self, pending: Pending) -> None:
        """Every message of ``pending`` is in Kafka: count them and send their PUBACKs."""
        if pending.dropped:
            return
        stats = self.stats
        dead = sum(pending.dead.values())
        stats.produced += pending.produced
        stats.dead_lettered += dead
        PRODUCED.inc(pending.produced)
        for reason, count in pending.dead.items():
            stats.by_reason[reason] = stats.by_reason.get(reason, 0) + count
            DEAD_LETTERED.labels(reason).inc(count)
        IN_FLIGHT.dec(pending.produced + dead)
        now = time.time()
        for received_at, count in pending.received_at:
            latency = max(0.0, now - received_at)
            for _ in range(count):
                LATENCY.observe(latency)
        # On a newer connection the broker redelivers the message instead (a duplicate).
        generation = self._generation
        mids = [mid for gen, mid in pending.acks if gen == generation]
        queue_raw(self.client, puback_packets(mids))
        stats.acked += len(mids)

    # --- lifecycle ---

    def connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = self.max_in_flight
        props.SessionExpiryInterval = self.settings.ingest.bridge_session_expiry
        self.client.connect_async(
            self.settings.mqtt_host,
            self.settings.mqtt.port,
            keepalive=30,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def run(self, shutdown: Shutdown) -> None:
        """Bridge until ``shutdown`` is requested; then stop taking, flush, ack, disconnect."""
        self._run_shutdown = shutdown
        self.connect()
        try:
            while not shutdown.requested:
                if self._fatal is not None:
                    raise KafkaFatal(f"Kafka producer failed: {self._fatal}")
                while self._retry:
                    self._produce(*self._retry.pop(0), again=True)
                # While Kafka holds readings, serve its confirmations every few ms.
                busy = self.stats.in_flight > 0
                batch = self._take(wait=0 if busy else 0.1)
                if batch:
                    self._handle(batch)
                self.producer.poll(0 if batch or not busy else 0.002)
                if self.stats.in_flight < self.max_in_flight:
                    with self._room:
                        self._room.notify_all()
        finally:
            self._close()

    def _close(self) -> None:
        self._stopping = True
        with self._room:
            self._room.notify_all()
        # Messages already taken go to Kafka too; what arrives from now on stays unacked.
        while batch := self._take(wait=0):
            self._handle(batch)
        remaining = self.producer.flush(self.flush_timeout)
        self.client.disconnect()  # queued after the last PUBACKs, so they are sent first
        self.client.loop_stop()
        log.info(
            "bridge stopped",
            received=self.stats.received,
            produced=self.stats.produced,
            dead_lettered=self.stats.dead_lettered,
            unconfirmed=remaining,
        )

    # --- on a thread, for tests and benchmarks ---

    def start(self) -> Bridge:
        def target() -> None:
            try:
                self.run(self._shutdown)
            except BaseException as exc:
                self._error = exc
                raise

        self._thread = threading.Thread(target=target, name="bridge", daemon=True)
        self._thread.start()
        return self

    def wait_subscribed(self, timeout: float = 15) -> None:
        if not self._subscribed.wait(timeout):
            raise TimeoutError("the bridge's subscription was not acknowledged")

    def stop(self) -> None:
        self._shutdown.request()
        if self._thread is not None:
            self._thread.join(60)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Bridge:
        self.start().wait_subscribed()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
