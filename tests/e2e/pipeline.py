"""The whole platform as real processes, and a ledger that reconciles it end to end.

Shared by the end-to-end test (``tests/e2e``) and the fault suite (``tests/faults``):

* ``Service``: one ``fleet ...`` service as a subprocess (start, kill -9, SIGTERM, log).
* ``Cars``: simulated cars publishing the simulator's readings over MQTT at QoS 1; every
  reading is remembered with the broker's PUBACK for it.
* ``Ledger``: what is in Kafka (telemetry, scores, dead letters), on the twins and in the
  lake, and the checks that nothing was lost or doubled between them.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import paho.mqtt.client as mqtt
import polars as pl
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from fleet import clients
from fleet.avro import anomaly_codec, telemetry_codec
from fleet.settings import Settings
from fleet.waiting import wait_for
from ingest.deadletter import header_dict
from ingest.outputs import json_payloads
from ingest.simulator import FleetSimulator, SimulationConfig
from ingest.validation import TOPIC_PREFIX, reading_payload
from lake.naming import DATASET_PREFIXES
from tests.ingest.helpers import hostile_payloads, valid_sensors
from twin.live import forget, live_twins

FLEET = Path(sys.executable).with_name("fleet")
#: A small model from Kafka: enough to score, quick to train.
TRAIN_OPTIONS = [
    "--source",
    "kafka",
    "--epochs",
    "3",
    "--supervised-epochs",
    "0",
    "--eval-cars",
    "0",
]


def train_and_promote(env: dict[str, str], model_name: str) -> str:
    """`fleet ml train --promote` from Kafka as a real process; the promoted version."""
    trained = subprocess.run(
        [str(FLEET), "ml", "train", *TRAIN_OPTIONS, "--promote"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    version = trained.stdout.strip().splitlines()[-1]
    assert f"promoted {model_name} {version}" in trained.stderr
    return version


T = TypeVar("T")


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set for the block (to build Settings from them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def service_env(stack_env: dict[str, str], settings: Settings) -> dict[str, str]:
    """The environment of a ``fleet`` subprocess that works on exactly these settings' topics,
    groups, database, bucket and registry (what ``Settings()`` in it must read back)."""
    topics, groups = settings.topics, settings.groups
    return (
        dict(os.environ)
        | stack_env
        | {
            "FLEET_TOPICS_TELEMETRY": topics.telemetry,
            "FLEET_TOPICS_ANOMALIES": topics.anomalies,
            "FLEET_TOPICS_DEAD_LETTERS": topics.dead_letters,
            "FLEET_TOPICS_MODELS": topics.models,
            "FLEET_GROUPS_TWIN": groups.twin,
            "FLEET_GROUPS_LAKE": groups.lake,
            "FLEET_GROUPS_SCORER": groups.scorer,
            "FLEET_GROUPS_BRIDGE": groups.bridge,
            "FLEET_GROUPS_HISTORY": groups.history,
            "FLEET_MONGODB_DATABASE": settings.mongodb.database,
            "FLEET_TWIN_COLLECTION": settings.twin.collection,
            "FLEET_GCS_BUCKET": settings.gcs.bucket,
            "FLEET_ML_REGISTRY_PREFIX": settings.ml.registry_prefix,
            "FLEET_ML_MODEL_NAME": settings.ml.model_name,
            "FLEET_ML_STREAM_TIMEOUT_MS": str(settings.ml.stream_timeout_ms),
            "FLEET_LAKE_FLUSH_SECONDS": str(settings.lake.flush_seconds),
            "FLEET_LAKE_RETRY_MAX_SECONDS": str(settings.lake.retry_max_seconds),
            "FLEET_INGEST_BRIDGE_SESSION_EXPIRY": str(settings.ingest.bridge_session_expiry),
            "FLEET_INGEST_BRIDGE_CLIENT_ID": f"bridge-{groups.bridge}",
            # A restarted consumer gets its partitions back within seconds, not 45 s.
            "FLEET_KAFKA_EXTRA": json.dumps(
                {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
            ),
            "FLEET_LOG_FORMAT": "json",
        }
    )


# --- services as real processes ---------------------------------------------------------


class ServiceDied(AssertionError):
    pass


@dataclass
class Service:
    """``fleet <args>`` as a subprocess, its output appended to ``log_path``."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _mark: int = 0  # log size at the last start

    def start(self) -> Service:
        self._mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(FLEET), *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1
        return self

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines written since the last start."""
        with self.log_path.open("rb") as log:
            log.seek(self._mark)
            lines = log.read().decode(errors="replace").splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def check(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceDied(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def wait_logged(self, event: str, timeout: float) -> None:
        """Until this run of the service logged ``event`` (e.g. "subscribed")."""

        def logged() -> bool:
            self.check()
            return any(e.get("event") == event for e in self.events())

        wait_for(
            logged, timeout, f"{self.name} to log {event!r}", interval=0.2, fatal=(ServiceDied,)
        )

    def kill9(self) -> None:
        assert self.process is not None and self.process.poll() is None, f"{self.name} not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM; the exit code (a service must stop cleanly: 0)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return -signal.SIGKILL

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def answered(info: mqtt.MQTTMessageInfo) -> bool:
    """The broker's PUBACK for this publish arrived. (``is_published()`` raises for a message
    published while disconnected, which paho queues and sends after reconnecting.)"""
    return bool(info._published)


def scrape(port: int, prefix: str) -> dict[str, float]:
    """Prometheus metrics of a service (samples without labels), by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix) and "{" not in line:
            name, value = line.split()
            values[name] = float(value)
    return values


def bridge_idle(port: int) -> bool:
    """The bridge has no message taken but not yet confirmed by Kafka."""
    return scrape(port, "fleet_bridge_")["fleet_bridge_in_flight"] == 0


# --- simulated cars over MQTT --------------------------------------------------------------


class Cars:
    """Simulated cars (``ingest.simulator``) publishing their JSON readings at QoS 1.

    With ``password``, each car connects with its own account (username = car id, as
    ``fleet ingest add-car`` creates them); otherwise ``connections`` gateway connections
    carry all cars (car i on connection i mod n, so each car's readings stay in order).
    Every reading is remembered with its ``MQTTMessageInfo``: published = PUBACKed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        cars: int,
        first_car: int = 1,
        seed: int = 7,
        interval_ms: int = 10_000,
        start_ms: int | None = None,
        password: str | None = None,
        connections: int = 2,
    ) -> None:
        start = start_ms if start_ms is not None else int(time.time() * 1000) - 3_600_000
        self.simulator = FleetSimulator(
            SimulationConfig(
                cars=cars,
                first_car=first_car,
                seed=seed,
                interval_ms=interval_ms,
                start_time_ms=start,
            )
        )
        self.car_ids = list(self.simulator.car_ids)
        self.sent: list[tuple[str, int, mqtt.MQTTMessageInfo]] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        logins = (
            [(car, password) for car in self.car_ids]
            if password is not None
            else [
                (settings.mqtt.gateway_username, settings.mqtt.gateway_password.get_secret_value())
            ]
            * connections
        )
        self.clients: list[mqtt.Client] = []
        for n, (username, secret) in enumerate(logins):
            client = clients.mqtt_client(
                settings,
                client_id=f"cars-{uuid.uuid4().hex[:6]}-{n}",
                username=username,
                password=secret,
                protocol=mqtt.MQTTv5,
            )
            client.max_inflight_messages_set(1000)
            client.max_queued_messages_set(0)
            client.reconnect_delay_set(min_delay=1, max_delay=2)
            client.on_publish = self._on_publish
            client.connect(settings.mqtt_host, settings.mqtt.port, keepalive=30)
            client.loop_start()
            self.clients.append(client)
        wait_for(lambda: all(c.is_connected() for c in self.clients), 30, "car connections")

    def _on_publish(self, _c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            with self._lock:
                self.refused += 1

    def step(self) -> int:
        """Publish one reading of every car; returns how many."""
        batch = self.simulator.step()
        count = len(self.clients)
        for i, (car, payload) in enumerate(zip(batch.car_ids, json_payloads(batch), strict=True)):
            info = self.clients[i % count].publish(TOPIC_PREFIX + car, payload, qos=1)
            self.sent.append((car, batch.seq, info))
        return len(batch)

    def start(self, period: float) -> Cars:
        """Publish a step every ``period`` seconds on a thread, until ``stop()``."""
        self._stop.clear()

        def run() -> None:
            try:
                while True:
                    self.step()
                    if self._stop.wait(period):
                        return
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, name="cars", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if self.error is not None:
            raise self.error

    @property
    def published(self) -> int:
        return len(self.sent)

    def acked(self) -> set[tuple[str, int]]:
        return {(car, seq) for car, seq, info in list(self.sent) if answered(info)}

    def all_answered(self) -> bool:
        return all(answered(info) for _c, _s, info in list(self.sent))

    def close(self) -> None:
        self.stop()
        for client in self.clients:
            client.disconnect()
            client.loop_stop()


def bad_inputs(car: str) -> list[tuple[str, bytes, str]]:
    """One message of every kind the bridge dead-letters: (MQTT topic, payload, reason)."""
    good = valid_sensors()
    topic = TOPIC_PREFIX + car
    return [
        (topic, b"{not json", "not_json"),
        (topic, b"[1, 2, 3]", "not_object"),
        (
            topic,
            json.dumps({k: v for k, v in good.items() if k != "speed"}).encode(),
            "missing_field",
        ),
        (topic, json.dumps(good | {"speed": "fast"}).encode(), "wrong_type"),
        (topic, reading_payload(good)[:-1] + b',"speed":NaN}', "not_finite"),
        (topic, json.dumps(good | {"tire_pressure_2_1": -4}).encode(), "out_of_range"),
        (topic, reading_payload(good)[:-1] + b',"pad":"' + b"x" * 20_000 + b'"}', "oversized"),
        (TOPIC_PREFIX + "car*1", reading_payload(good), "car_id"),
        (f"{topic}/engine", reading_payload(good), "topic"),
        *((topic, payload, reason) for payload, reason in hostile_payloads()),
    ]


class Gateway:
    """A QoS-1 publisher on the gateway account (for bad input), counting PUBACKs."""

    def __init__(self, settings: Settings) -> None:
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.reasons: Counter[str] = Counter()
        self.client = clients.mqtt_client(
            settings,
            client_id=f"gateway-{uuid.uuid4().hex[:6]}",
            username=settings.mqtt.gateway_username,
            password=settings.mqtt.gateway_password.get_secret_value(),
            protocol=mqtt.MQTTv5,
        )
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect(settings.mqtt_host, settings.mqtt.port, keepalive=30)
        self.client.loop_start()
        wait_for(self.client.is_connected, 30, "the gateway connection")

    def send(self, messages: list[tuple[str, bytes, str]]) -> None:
        for topic, payload, reason in messages:
            self.infos.append(self.client.publish(topic, payload, qos=1))
            self.reasons[reason] += 1

    @property
    def sent(self) -> int:
        return len(self.infos)

    def all_answered(self) -> bool:
        return all(answered(info) for info in self.infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- what is in Kafka, on the twins and in the lake -----------------------------------------


class Tail(Generic[T]):
    """Everything on a topic from the beginning, read incrementally (no consumer group)."""

    def __init__(
        self, settings: Settings, topic: str, partitions: int, read: Callable[[Message], T]
    ) -> None:
        self.read = read
        self.topic = topic
        self.items: list[T] = []
        self.consumer = clients.kafka_consumer(settings, f"tail-{uuid.uuid4().hex[:8]}")
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )

    def poll(self) -> list[T]:
        while True:
            messages = self.consumer.consume(5000, timeout=0.2)
            for message in messages:
                error = message.error()
                if error is None:
                    self.items.append(self.read(message))
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(str(error))
            if len(messages) < 5000:
                return self.items

    def reached(self, ends: dict[int, int]) -> bool:
        """Whether this reader has read every partition up to ``ends`` (after a broker restart
        its client may still be reconnecting while the platform has long caught up)."""
        self.poll()
        wanted = [TopicPartition(self.topic, p) for p, end in ends.items() if end > 0]
        return all(tp.offset >= ends[tp.partition] for tp in self.consumer.position(wanted))

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class Event:
    """One Kafka message: where it is and which reading it is (or scores)."""

    car: str
    time: int  # event time (ms)
    seq: int
    partition: int
    offset: int
    version: str = ""  # the model version, for scores


def reading_of(message: Message) -> Event:
    r = telemetry_codec().decode(message.value() or b"")
    where = message.partition() or 0, message.offset() or 0
    return Event(r["car_id"], r["event_time"], r["seq"], *where)


def score_of(message: Message) -> Event:
    r = anomaly_codec().decode(message.value() or b"")
    where = message.partition() or 0, message.offset() or 0
    return Event(r["car_id"], r["event_time"], r["seq"], *where, r["model_version"])


@dataclass
class Expected:
    """What the twin of one car must count, derived from Kafka alone."""

    applied: int = 0  # readings newer than every reading before them
    late_readings: int = 0  # first seen below the newest (a reordered publish)
    late_scores: int = 0  # scores older than the newest score (re-scored after a crash)
    duplicates: int = 0  # readings or scores seen before (redeliveries)


def expected_counts(readings: list[Event], scores: list[Event]) -> dict[str, Expected]:
    """Per car, in Kafka order (one car, one partition): a reading is applied if newer (event
    time, seq) than every reading before it, a duplicate if seen before, late otherwise; a
    score is a duplicate of the newest score, late if older, applied otherwise."""
    out: dict[str, Expected] = defaultdict(Expected)
    newest: dict[str, tuple[int, int]] = {}
    seen: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for e in readings:
        key, x = (e.time, e.seq), out[e.car]
        if key in seen[e.car]:
            x.duplicates += 1
        elif e.car not in newest or key > newest[e.car]:
            x.applied += 1
            newest[e.car] = key
        else:
            x.late_readings += 1
        seen[e.car].add(key)
    current: dict[str, tuple[int, int, str]] = {}
    for e in scores:
        score, x, now = (e.time, e.seq, e.version), out[e.car], current.get(e.car)
        if score == now:
            x.duplicates += 1
        elif now is not None and score[:2] < now[:2]:
            x.late_scores += 1
        else:
            current[e.car] = score
    return out


def letter_of(message: Message) -> str:
    return header_dict(message.headers())["reason"]  # type: ignore[arg-type]


class Offsets:
    """End offsets of topics and committed offsets of consumer groups (one client each)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.probe = clients.kafka_consumer(settings, f"probe-{uuid.uuid4().hex[:8]}")
        self.groups: dict[str, Consumer] = {}

    def partitions(self, topic: str) -> int:
        t = self.settings.topics
        return {
            t.telemetry: t.telemetry_partitions,
            t.anomalies: t.anomalies_partitions,
            t.dead_letters: t.dead_letters_partitions,
        }[topic]

    def ends(self, topic: str) -> dict[int, int]:
        return {
            p: self.probe.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in range(self.partitions(topic))
        }

    def committed(self, group: str, topic: str) -> dict[int, int]:
        if group not in self.groups:
            self.groups[group] = clients.kafka_consumer(self.settings, group)
        parts = [TopicPartition(topic, p) for p in range(self.partitions(topic))]
        return {tp.partition: max(tp.offset, 0) for tp in self.groups[group].committed(parts, 5)}

    def caught_up(self, group: str, topic: str, ends: dict[int, int] | None = None) -> bool:
        """The group committed at least to ``ends`` (default: the topic's ends now)."""
        ends = self.ends(topic) if ends is None else ends
        done = self.committed(group, topic)
        return all(done[p] >= end for p, end in ends.items())

    def close(self) -> None:
        self.probe.close()
        for consumer in self.groups.values():
            consumer.close()


class LakeView:
    """The lake's rows (Kafka position and reading of each), downloading each object once
    per version (objects flushed early may be rewritten as supersets under the same name)."""

    COLUMNS: ClassVar[list[str]] = ["car_id", "seq", "kafka_partition", "kafka_offset"]

    def __init__(self, settings: Settings) -> None:
        self.bucket = clients.gcs_bucket(settings)
        self.cache: dict[tuple[str, str], pl.DataFrame] = {}

    def rows(self, dataset: str) -> pl.DataFrame:
        frames = []
        for blob in self.bucket.list_blobs(prefix=DATASET_PREFIXES[dataset] + "/"):
            key = (blob.name, str(blob.generation or blob.etag))
            if key not in self.cache:
                data = io.BytesIO(blob.download_as_bytes())
                self.cache[key] = pl.read_avro(data, columns=self.COLUMNS)
            frames.append(self.cache[key])
        if not frames:
            return pl.DataFrame(schema=dict.fromkeys(self.COLUMNS, pl.Int64) | {"car_id": pl.Utf8})
        return pl.concat(frames)


def twins_of(settings: Settings, collection: str | None = None) -> dict[str, dict[str, Any]]:
    database = clients.mongo_database(settings)
    twins = live_twins(database, collection or settings.twin.collection)
    return {t["_id"]: t for t in twins.find()}


@dataclass
class Counts:
    """The reconciled figures at one quiet moment (cumulative)."""

    published: int  # readings the broker acknowledged (PUBACK)
    in_kafka: int  # telemetry messages, redelivered duplicates included
    distinct_in_kafka: int
    on_twins: int  # readings counted on the twins: applied, or late (a newer one came first)
    late: int  # readings that reached Kafka after a newer one of their car
    in_lake: int  # telemetry rows in the lake
    distinct_in_lake: int
    scored: int  # distinct readings with a score in Kafka
    scores_in_lake: int
    bad_inputs: int
    dead_letters: int
    twins: int
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "problems"}


class Ledger:
    """Reads every output of the platform and reconciles it with what the cars published."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        t = settings.topics
        self.telemetry = Tail(settings, t.telemetry, t.telemetry_partitions, reading_of)
        self.scores = Tail(settings, t.anomalies, t.anomalies_partitions, score_of)
        self.letters = Tail(settings, t.dead_letters, t.dead_letters_partitions, letter_of)
        self.offsets = Offsets(settings)
        self.lake = LakeView(settings)

    def in_kafka(self) -> set[tuple[str, int]]:
        return {(e.car, e.seq) for e in self.telemetry.poll()}

    def pipeline_caught_up(self) -> bool:
        """Every consumer committed everything on its topics (twins, lake, scores)."""
        t, g, o = self.settings.topics, self.settings.groups, self.offsets
        telemetry = o.ends(t.telemetry)
        if not all(
            o.caught_up(group, t.telemetry, telemetry) for group in (g.scorer, g.twin, g.lake)
        ):
            return False
        anomalies = o.ends(t.anomalies)
        return all(o.caught_up(group, t.anomalies, anomalies) for group in (g.twin, g.lake))

    def cut(self) -> tuple[tuple[int, ...], ...]:
        """The ends of every topic: equal before and after a check = nothing moved."""
        t = self.settings.topics
        return tuple(
            tuple(self.offsets.ends(topic).values())
            for topic in (t.telemetry, t.anomalies, t.dead_letters)
        )

    def wait_quiet(
        self, cars: Cars, gateway: Gateway | None, bridge_port: int, timeout: float
    ) -> None:
        """Until every publish was answered, every answered reading is in Kafka, the bridge
        holds nothing, and every consumer committed the ends of its topics."""
        wait_for(cars.all_answered, timeout, "a PUBACK for every reading")
        if gateway is not None:
            wait_for(gateway.all_answered, timeout, "a PUBACK for every bad input")
        acked = cars.acked()
        wait_for(lambda: acked <= self.in_kafka(), timeout, "every PUBACKed reading in Kafka")
        bad = gateway.sent if gateway else 0
        wait_for(lambda: len(self.letters.poll()) >= bad, timeout, f"{bad} dead letters")
        wait_for(lambda: bridge_idle(bridge_port), timeout, "the bridge to hold nothing")
        wait_for(
            self.pipeline_caught_up, timeout, "twins, lake and scorer to catch up", interval=0.3
        )
        for tail in (self.telemetry, self.scores, self.letters):
            ends = self.offsets.ends(tail.topic)
            what = f"this test's reader at the end of {tail.topic}"
            wait_for(lambda tail=tail, ends=ends: tail.reached(ends), timeout, what)

    def reconcile(self, cars: Cars, gateway: Gateway | None, model_version: str | None) -> Counts:
        """Counts at a quiet moment, and every way they fail to reconcile (``problems``)."""
        acked = cars.acked()
        readings = self.telemetry.poll()
        scores = self.scores.poll()
        letters = self.letters.poll()
        distinct = {(e.car, e.seq) for e in readings}
        problems = check_kafka(cars, acked, distinct)
        twins = twins_of(self.settings)
        on_twins, found = check_twins(twins, readings, scores, model_version)
        problems += found
        scored = {(e.car, e.seq) for e in scores}
        if model_version is not None:
            if scored != distinct:
                problems.append(
                    f"scores: {len(distinct - scored)} readings unscored, "
                    f"{len(scored - distinct)} scores of unknown readings"
                )
            if {e.version for e in scores} != {model_version}:
                problems.append(f"scores by versions {sorted({e.version for e in scores})}")
        lake = self.lake.rows("telemetry")
        lake_scores = self.lake.rows("anomalies")
        problems += check_lake("telemetry", lake, readings)
        problems += check_lake("anomalies", lake_scores, scores)
        bad = gateway.sent if gateway else 0
        if len(letters) != bad:
            problems.append(f"{len(letters)} dead letters for {bad} bad inputs")
        if gateway is not None and Counter(letters) != gateway.reasons:
            problems.append(
                f"dead-letter reasons {dict(Counter(letters))} != {dict(gateway.reasons)}"
            )
        return Counts(
            published=len(acked),
            in_kafka=len(readings),
            distinct_in_kafka=len(distinct),
            on_twins=on_twins,
            late=late_readings(readings),
            in_lake=lake.height,
            distinct_in_lake=lake.select("car_id", "seq").n_unique(),
            scored=len(scored),
            scores_in_lake=lake_scores.height,
            bad_inputs=bad,
            dead_letters=len(letters),
            twins=len(twins),
            problems=problems,
        )

    def close(self) -> None:
        for tail in (self.telemetry, self.scores, self.letters):
            tail.close()
        self.offsets.close()


def check_kafka(
    cars: Cars, acked: set[tuple[str, int]], distinct: set[tuple[str, int]]
) -> list[str]:
    """Every PUBACKed reading in Kafka, and nothing else."""
    problems = []
    if cars.refused:
        problems.append(f"{cars.refused} readings refused by the broker")
    if len(acked) != cars.published:
        problems.append(f"{cars.published - len(acked)} readings never PUBACKed")
    if acked - distinct:
        problems.append(f"lost: {len(acked - distinct)} PUBACKed readings not in Kafka")
    if distinct - acked:
        problems.append(f"{len(distinct - acked)} readings in Kafka nobody published")
    return problems


def check_twins(
    twins: dict[str, dict[str, Any]],
    readings: list[Event],
    scores: list[Event],
    model_version: str | None,
) -> tuple[int, list[str]]:
    """Every Kafka event applied to its twin exactly once (revision = the car's events), each
    distinct reading counted once (applied, or late when a newer one came first), duplicates
    skipped, and the score of the newest reading by the promoted model.

    Returns the readings counted on the twins (applied + late) and the problems found."""
    problems = []
    per_car_events = Counter(e.car for e in readings) + Counter(e.car for e in scores)
    expected = expected_counts(readings, scores)
    if set(twins) != {e.car for e in readings}:
        problems.append(f"{len(twins)} twins for {len(expected)} cars in Kafka")
    counted = 0
    for car, twin in twins.items():
        c, x = twin["counters"], expected[car]
        counted += c["readings_applied"] + c["late_skipped"] - x.late_scores
        if twin["revision"] != per_car_events[car]:
            problems.append(f"{car}: revision {twin['revision']} != {per_car_events[car]} events")
        got = (c["readings_applied"], c["late_skipped"], c["duplicates_skipped"])
        want = (x.applied, x.late_readings + x.late_scores, x.duplicates)
        if got != want:
            problems.append(f"{car}: (applied, late, duplicates) {got} != {want} from Kafka")
        if model_version is not None:
            anomaly = twin["anomaly"] or {}
            if anomaly.get("model_version") != model_version:
                problems.append(f"{car}: score by {anomaly.get('model_version')}")
            if anomaly.get("seq") != twin["last_reading"]["seq"]:
                problems.append(f"{car}: score of seq {anomaly.get('seq')}, not the newest")
    return counted, problems


def late_readings(readings: list[Event]) -> int:
    return sum(x.late_readings for x in expected_counts(readings, []).values())


def check_lake(dataset: str, frame: pl.DataFrame, events: list[Event]) -> list[str]:
    """The lake holds each Kafka event of the dataset exactly once."""
    problems = []
    stored = Counter(
        zip(frame["kafka_partition"].to_list(), frame["kafka_offset"].to_list(), strict=True)
    )
    doubled = sum(1 for n in stored.values() if n > 1)
    expected = {(e.partition, e.offset) for e in events}
    if doubled:
        problems.append(f"lake {dataset}: {doubled} events stored more than once")
    if set(stored) != expected:
        problems.append(
            f"lake {dataset}: {len(expected - set(stored))} events missing, "
            f"{len(set(stored) - expected)} unknown"
        )
    return problems


def rebuild_differences(settings: Settings, env: dict[str, str], cli: bool = True) -> list[str]:
    """`fleet twin rebuild` into a fresh collection, compared field for field with the live
    twins (then dropped). Returns the differences, empty when they are equal.

    ``cli=False`` calls the function the command runs (``twin.rebuild.rebuild``) in this
    process instead, saving a process start per call (the fault suite rebuilds after every
    case)."""
    fresh = f"rebuild_{uuid.uuid4().hex[:8]}"
    if cli:
        result = subprocess.run(
            [str(FLEET), "twin", "rebuild"],
            env=env | {"FLEET_TWIN_COLLECTION": fresh},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        from twin.rebuild import rebuild

        twin = settings.twin.model_copy(update={"collection": fresh, "poll_timeout": 0.2})
        rebuild(settings.model_copy(update={"twin": twin}))
    try:
        live = twins_of(settings)
        rebuilt = twins_of(settings, fresh)
    finally:
        forget(clients.mongo_database(settings), fresh)
    differences = []
    for car in sorted(set(live) | set(rebuilt)):
        a, b = live.get(car), rebuilt.get(car)
        if a is None or b is None:
            differences.append(f"{car}: only in {'rebuild' if a is None else 'live twins'}")
            continue
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                differences.append(
                    f"{car}.{key}: live {a.get(key)!r:.120} != rebuilt {b.get(key)!r:.120}"
                )
    return differences
