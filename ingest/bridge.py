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
import types
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter, Gauge, Histogram

from fleet import clients
from fleet.avro import telemetry_codec
from fleet.logs import get_logger
from fleet.service import Shutdown
from fleet.settings import Settings
from ingest.deadletter import dead_letter_headers
from ingest.sequence import Sequencer
from ingest.validation import TOPIC, Rejected, to_record, validate_message

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
class Incoming:
    message: mqtt.MQTTMessage
    generation: int  # the MQTT connection it came on: acks only go back on that one
    received_at: float  # wall clock, seconds


@dataclass(slots=True)
class Outgoing:
    """One Kafka message standing for one MQTT message (a reading or a dead letter)."""

    topic: str
    key: str | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]] | None
    item: Incoming
    rejected: Rejected | None = None


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


def _read_available(client: mqtt.Client, max_packets: int = 1) -> mqtt.MQTTErrorCode:
    """``Client.loop_read`` that reads every complete packet already received (up to 2,000)."""
    if client._sock is None:
        return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
    for _ in range(2000):
        rc = client._packet_read()
        if rc > 0:
            return client._loop_rc_handle(rc)
        if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
            break
    return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


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
        self.codec = telemetry_codec()
        self.sequencer = Sequencer()
        self.stats = Stats()
        self.producer = producer or clients.kafka_producer(
            settings,
            # Never give up on a reading: retry until Kafka is back (0 = no delivery timeout).
            **{"message.timeout.ms": 0, "queue.buffering.max.messages": 200_000},
        )
        self._queue: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self._room = threading.Condition()
        self._generation = 0
        self._stopping = False
        self._subscribed = threading.Event()
        self._fatal: KafkaError | None = None
        self._thread: threading.Thread | None = None
        self._shutdown = Shutdown()
        self._error: BaseException | None = None
        self._retry: list[Outgoing] = []
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
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        # paho reads one packet per wake of its network thread; with our main thread busy,
        # each wake also waits for the GIL, which caps intake at a few hundred messages/s and
        # leaves PINGRESP so far behind that the keepalive expires. Read what is there.
        client.loop_read = types.MethodType(_read_available, client)  # type: ignore[method-assign]
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
        client.subscribe(self.subscription, qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        # Readings published before the first subscription are not kept (MQTT semantics):
        # this line tells operators and tests that the bridge now holds a session for them.
        log.info("subscribed", subscription=self.subscription)
        self._subscribed.set()

    def _on_disconnect(self, *args: Any) -> None:
        if not self._stopping:
            log.warning("mqtt disconnected; reconnecting", reason=str(args[3]))

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._stopping:
            return  # not acked: the broker redelivers it to the next session
        if self.stats.in_flight >= self.max_in_flight:
            # Only QoS 0 gets here (the broker honours our Receive Maximum for QoS 1).
            with self._room:
                while self.stats.in_flight >= self.max_in_flight and not self._stopping:
                    self._room.wait(0.5)
        self.stats.received += 1
        RECEIVED.inc()
        IN_FLIGHT.inc()
        self._queue.put(Incoming(message, self._generation, time.time()))

    # --- Kafka side (the main thread) ---

    def _take(self, wait: float) -> list[Incoming]:
        try:
            batch = [self._queue.get(timeout=wait)]
        except queue.Empty:
            return []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _handle(self, batch: list[Incoming]) -> None:
        """Validate, stamp, encode and produce one batch (one Kafka message per input)."""
        records: list[dict[str, Any]] = []
        accepted: list[Incoming] = []
        for item in batch:
            message = item.message
            try:
                topic = message.topic
            except UnicodeDecodeError:
                self._dead_letter(item, Rejected(TOPIC, "topic is not UTF-8"), "")
                continue
            payload = bytes(message.payload)
            outcome = validate_message(topic, payload, self.max_payload, self.reserved)
            if isinstance(outcome, Rejected):
                self._dead_letter(item, outcome, topic)
                continue
            car_id, reading = outcome
            event_time = reading.timestamp_ms or int(item.received_at * 1000)
            seq = self.sequencer.next(car_id, reading.seq, int(item.received_at * 1_000_000))
            records.append(to_record(car_id, reading, event_time, seq))
            accepted.append(item)
        topic_name = self.settings.topics.telemetry
        for record, value, item in zip(
            records, self.codec.encode_many(records), accepted, strict=True
        ):
            self._produce(Outgoing(topic_name, record["car_id"], value, None, item))

    def _dead_letter(self, item: Incoming, rejected: Rejected, topic: str) -> None:
        headers = dead_letter_headers(
            rejected, "mqtt", int(item.received_at * 1000), mqtt_topic=topic
        )
        self._produce(
            Outgoing(
                self.settings.topics.dead_letters,
                None,
                bytes(item.message.payload),
                list(headers),
                item,
                rejected,
            )
        )

    def _produce(self, out: Outgoing) -> None:
        callback = partial(self._delivered, out)
        while True:
            try:
                self.producer.produce(
                    out.topic, out.value, out.key, headers=out.headers, on_delivery=callback
                )
                return
            except BufferError:  # librdkafka's queue is full: serve callbacks, then retry
                self.producer.poll(0.1)
            except KafkaException as exc:  # e.g. the topic is missing: wait for it
                if self._stopping or (self._run_shutdown and self._run_shutdown.requested):
                    return  # never acked: the broker redelivers it to the next session
                now = time.monotonic()
                if now - self._last_warning > 10:
                    log.warning("kafka refuses readings; holding them", error=str(exc))
                    self._last_warning = now
                self.producer.poll(0.5)

    def _delivered(self, out: Outgoing, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            if err.fatal():
                self._fatal = err
                return
            # Not confirmed and not acked: the main loop produces it again.
            log.warning("kafka delivery failed; retrying", error=str(err))
            self.stats.retried += 1
            self._retry.append(out)
            return
        rejected, item = out.rejected, out.item
        if rejected is None:
            self.stats.produced += 1
            PRODUCED.inc()
        else:
            self.stats.dead_lettered += 1
            self.stats.by_reason[rejected.reason] = self.stats.by_reason.get(rejected.reason, 0) + 1
            DEAD_LETTERED.labels(rejected.reason).inc()
        IN_FLIGHT.dec()
        LATENCY.observe(max(0.0, time.time() - item.received_at))
        message = item.message
        if message.qos > 0 and item.generation == self._generation:
            # On a newer connection the broker redelivers the message instead (a duplicate).
            self.client.ack(message.mid, message.qos)
            self.stats.acked += 1

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
                    self._produce(self._retry.pop(0))
                batch = self._take(wait=0.01 if self.stats.in_flight else 0.1)
                if batch:
                    self._handle(batch)
                self.producer.poll(0)
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
