"""Our twin projector beside a real peer, Quix Streams with its MongoDBSink: same telemetry,
same MongoDB-wire server, same run (issue #22, item 8).

    .venv/bin/python bench/peer.py           # backlog, crash, late reading, live load (~8 min)
    .venv/bin/python bench/peer.py --quick   # a smoke run (~3 min)
    fleet bench --only peer

* ours: `fleet twin run` as a subprocess, default settings, twin-change events on (its
  default) and off.
* the peer: `bench/peer_quix.py`, a Quix Streams app (pinned below) that decodes our Avro with
  our codec and writes with `MongoDBSink` as its docs describe: one `UpdateOne({_id: car},
  {$set: reading}, upsert=True)` per record, a bulk per partition at each checkpoint (every
  5 s, Quix's default), offsets committed after the write. quixstreams pins a confluent-kafka
  older than ours, so it lives in its own venv, `<stack cache>/peer-venv` (created on first
  run, from PyPI); `make setup` and CI never need it.

Scenarios, in one stack of our own on free ports (Kafka + the default MongoDB-wire server, named
in the results), each side into its own database:

1. backlog: `--cars` x `--readings` readings (Avro, as the bridge writes them) in one topic,
   read by each side in its own consumer group, one after the other; the time runs from
   starting the process until its group has committed the whole topic (each side commits
   only after its writes), so it includes each process's start.
2. crash: each side again on the backlog in a fresh group, kill -9 mid-stream, restart;
   documents polled meanwhile: how many went back to an older reading than they had at the
   kill, how many writes were repeated, whether anything was counted twice.
3. late reading: one older reading per car for `--late-cars` cars, appended to the backlog
   topic and read by the backlog groups: what each side's documents show afterwards.
4. live: `--live-rate` readings/s over `--live-cars` cars for `--live-seconds`, produced
   straight to Kafka; `--probes` cars' documents polled every `--poll` s: produce -> the first
   poll whose document shows that reading (or a newer one), p50/p99. One side at a time.

Writes bench/results/peer.json and peer.md. Figures are indicative: 2 shared cores; the load
average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from confluent_kafka import TopicPartition
from pymongo.collection import Collection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleet import clients  # noqa: E402
from fleet.avro import telemetry_codec  # noqa: E402
from fleet.contract import SENSORS, WHEELS  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.stack import Stack, rust_server  # noqa: E402
from fleet.stack.ports import private_stack_environment  # noqa: E402
from fleet.stack.process import read_pidfile  # noqa: E402
from fleet.topics import create_topics, topic_specs  # noqa: E402
from fleet.waiting import wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PEER_APP = ROOT / "bench" / "peer_quix.py"
#: The peer, pinned. Its confluent-kafka pin (< 2.13) conflicts with ours: its own venv.
PEER_REQUIREMENT = "quixstreams[mongodb,avro]==3.28.1"
FAST_GROUP = {"session.timeout.ms": "6000"}  # a kill -9'd member leaves the group in 6 s
BASE_TIME_MS = 1_700_000_000_000
STEP_MS = 10_000
SEQ_STEP = 10  # backlog seqs 0, 10, 20...: room for a late reading between two of them
SINK_LOG = re.compile(r"Sent update requests to MongoDB; messages_processed=(\d+)")


class Died(RuntimeError):
    """A consumer process exited while we waited for it."""


def load() -> float:
    return round(os.getloadavg()[0], 1)


# --- the peer's virtualenv ------------------------------------------------------------------


def peer_python(cache: Path) -> Path:
    """The peer venv's python, created once (pip from PyPI) with a one-line notice."""
    venv = cache / "peer-venv"
    python = venv / "bin" / "python"
    marker = venv / "fleet-peer-requirement"
    if python.is_file() and marker.is_file() and marker.read_text().strip() == PEER_REQUIREMENT:
        return python
    print(f"peer bench: installing {PEER_REQUIREMENT} into {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, PEER_REQUIREMENT], check=True)
    marker.write_text(PEER_REQUIREMENT + "\n")
    return python


def peer_versions(python: Path) -> str:
    script = (
        "import importlib.metadata as m; "
        "print(', '.join(f'{p} {m.version(p)}' for p in "
        "('quixstreams', 'confluent-kafka', 'pymongo', 'fastavro')))"
    )
    return subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()


# --- data -----------------------------------------------------------------------------------


def reading(car: int, seq: int, event_time: int, coolant: float | None = None) -> dict[str, Any]:
    """A reading like the simulator's (healthy values that vary by car and step)."""
    record: dict[str, Any] = {"car_id": f"car{car}", "event_time": event_time, "seq": seq}
    for i, name in enumerate(SENSORS):
        record[name] = float(i + (car + seq) % 7)
    for w in WHEELS:
        record[f"tire_pressure_{w}"] = 30 + (car + seq) % 5
    record["control_unit_firmware"] = 2000
    if coolant is not None:
        record["coolant_temp"] = coolant
    return record


def producer(settings: Settings) -> Any:
    return clients.kafka_producer(settings, **{"linger.ms": 20, "batch.size": 1_000_000})


def send(kafka: Any, topic: str, records: Iterable[dict[str, Any]]) -> int:
    codec = telemetry_codec()
    count = 0
    for record in records:
        value = codec.encode(record)
        while True:
            try:
                kafka.produce(topic, key=record["car_id"], value=value)
                break
            except BufferError:
                kafka.poll(0.1)  # the queue is full: serve deliveries, then try again
        kafka.poll(0)
        count += 1
    return count


def backlog_readings(cars: int, steps: int) -> Iterable[dict[str, Any]]:
    """Step by step over the whole fleet, as cars report."""
    for step in range(steps):
        for car in range(cars):
            yield reading(car, step * SEQ_STEP, BASE_TIME_MS + step * STEP_MS)


# --- measuring ------------------------------------------------------------------------------


def freshness(
    produced: Mapping[tuple[str, int], float], observed: Iterable[tuple[str, int, float]]
) -> list[float]:
    """Seconds from producing each reading to the first observation of its car's document
    showing it or a newer one (a newer reading overwrites it: that is when it showed).

    ``produced``: (car, seq) -> when produced; ``observed``: (car, seq in the document, when).
    A reading never shown is left out (the caller checks that every probe caught up).
    """
    pending: dict[str, list[tuple[int, float]]] = {}
    for (car, seq), when in produced.items():
        pending.setdefault(car, []).append((seq, when))
    for readings in pending.values():
        readings.sort()
    shown: dict[str, int] = {}  # per car: how many of its readings have shown
    out: list[float] = []
    for car, seq, at in sorted(observed, key=lambda o: o[2]):
        readings, i = pending.get(car, []), shown.get(car, 0)
        while i < len(readings) and readings[i][0] <= seq:
            out.append(at - readings[i][1])
            i += 1
        shown[car] = i
    return out


def went_back(
    snapshot: Mapping[str, int], observed: Iterable[tuple[str, int, float]]
) -> dict[str, int]:
    """Cars whose document was seen with an older reading than at ``snapshot``: car -> the
    oldest seq seen."""
    back: dict[str, int] = {}
    for car, seq, _at in observed:
        held = snapshot.get(car)
        if held is not None and seq < held:
            back[car] = min(seq, back.get(car, seq))
    return back


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def nested(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


class Poller(threading.Thread):
    """Polls documents (some cars, or all), recording each change of their reading's seq."""

    def __init__(
        self, collection: Collection[Any], seq_path: str, cars: list[str] | None, every: float
    ) -> None:
        super().__init__(daemon=True)
        self.collection, self.seq_path, self.cars, self.every = collection, seq_path, cars, every
        self.observed: list[tuple[str, int, float]] = []
        self.polls = 0
        self.stop = threading.Event()

    def run(self) -> None:
        last: dict[str, int] = {}
        query = {} if self.cars is None else {"_id": {"$in": self.cars}}
        while not self.stop.wait(self.every):
            docs = list(self.collection.find(query, {self.seq_path: 1}))
            at = time.time()
            self.polls += 1
            for doc in docs:
                seq = nested(doc, self.seq_path)
                if isinstance(seq, int) and last.get(doc["_id"]) != seq:
                    last[doc["_id"]] = seq
                    self.observed.append((doc["_id"], seq, at))

    def finish(self) -> list[tuple[str, int, float]]:
        self.stop.set()
        self.join(60)
        return self.observed


# --- the two sides --------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One consumer: ours (`fleet twin run`) or the peer, a group into a database."""

    kind: str  # "ours" | "peer"
    topic: str
    group: str
    database: str
    emit_changes: bool = True

    @property
    def seq_path(self) -> str:
        return "last_reading.seq" if self.kind == "ours" else "seq"


@dataclass
class Bench:
    settings: Settings
    peer: Path  # the peer venv's python
    work: Path
    mongo: Any = field(init=False)
    probe: Any = field(init=False)
    group_probes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mongo = clients.mongo_client(self.settings)
        self.probe = clients.kafka_consumer(self.settings, f"peer-bench-{uuid.uuid4().hex[:6]}")

    def twins(self, side: Side) -> Collection[Any]:
        return self.mongo[side.database]["twins"]

    def new_topic(self, name: str) -> str:
        topic = f"bench.peer.{name}.{uuid.uuid4().hex[:6]}"
        create_topics(clients.kafka_admin(self.settings), topic_specs(self.with_topic(topic))[:1])
        return topic

    def with_topic(self, topic: str) -> Settings:
        topics = self.settings.topics.model_copy(update={"telemetry": topic})
        return self.settings.model_copy(update={"topics": topics})

    def side(self, kind: str, topic: str, name: str, emit_changes: bool = True) -> Side:
        suffix = f"{name}-{uuid.uuid4().hex[:6]}"
        return Side(
            kind, topic, f"bench-{suffix}", f"bench_{suffix}".replace("-", "_"), emit_changes
        )

    def start(self, side: Side, log_name: str) -> subprocess.Popen[bytes]:
        log = (self.work / f"{log_name}.log").open("wb")
        if side.kind == "ours":
            topics = self.settings.topics
            env = os.environ | {
                "PYTHONPATH": str(ROOT),
                "FLEET_TOPICS_TELEMETRY": side.topic,
                "FLEET_TOPICS_ANOMALIES": topics.anomalies,
                "FLEET_TOPICS_COMMANDS": topics.commands,
                "FLEET_TOPICS_TWIN_CHANGES": topics.twin_changes,
                "FLEET_GROUPS_TWIN": side.group,
                "FLEET_MONGODB_DATABASE": side.database,
                "FLEET_KAFKA_EXTRA": json.dumps(FAST_GROUP),
                "FLEET_TWIN_EMIT_CHANGES": json.dumps(side.emit_changes),
                "FLEET_LOG_FORMAT": "json",
                "FLEET_LOG_LEVEL": "INFO",
            }
            command = [sys.executable, "-m", "fleet", "twin", "run"]
        else:
            # Only what the peer needs: its own venv's packages plus our checkout (the codec).
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", "/tmp"),
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",  # its log lines, as they happen, for the crash case
            }
            command = [
                str(self.peer),
                str(PEER_APP),
                f"--broker={self.settings.kafka_bootstrap}",
                f"--group={side.group}",
                f"--topic={side.topic}",
                f"--mongo-port={self.settings.mongodb.port}",
                f"--db={side.database}",
                f"--state-dir={self.work / ('state-' + side.group)}",
            ]
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def ends(self, topic: str) -> dict[int, int]:
        return {
            p: self.probe.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
            for p in range(self.settings.topics.telemetry_partitions)
        }

    def committed(self, side: Side) -> dict[int, int]:
        """The side's committed offsets, asked by a consumer of its group that never joins it.
        (Not the admin API: librdkafka 2.16 crashes in its OffsetFetch when the coordinator of
        a group that is just being created answers NOT_COORDINATOR: it has no group handle.)"""
        if side.group not in self.group_probes:
            self.group_probes[side.group] = clients.kafka_consumer(self.settings, side.group)
        wanted = [
            TopicPartition(side.topic, p) for p in range(self.settings.topics.telemetry_partitions)
        ]
        answer = self.group_probes[side.group].committed(wanted, timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in answer}

    def wait_caught_up(
        self, side: Side, process: subprocess.Popen[bytes], ends: dict[int, int], timeout: float
    ) -> None:
        """Until the side's group has committed up to ``ends`` (after its writes, both sides)."""

        def done() -> bool:
            if process.poll() is not None:
                raise Died(f"{side.kind} exited with {process.returncode}")
            at = self.committed(side)
            return all(at.get(p, 0) >= end for p, end in ends.items())

        wait_for(done, timeout, f"{side.kind} to commit the topic", interval=0.2, fatal=(Died,))

    def server_process(self) -> psutil.Process | None:
        for service in Stack(self.settings, only=["mongodb"]).managed():
            record = read_pidfile(service.pidfile)
            if record is not None:
                return record.process()
        return None


def cpu_seconds(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM (both sides finish their batch and commit), then the exit code."""
    process.terminate()
    try:
        return process.wait(90)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(30)


def sink_writes(log: Path) -> int:
    """Records the peer's sink reported written (one log line per bulk it wrote)."""
    return sum(int(n) for n in SINK_LOG.findall(log.read_text(errors="replace")))


def started_at(log: Path, kind: str) -> float | None:
    """When the process said it was consuming (epoch seconds), from its log."""
    for line in log.read_text(errors="replace").splitlines():
        if kind == "ours" and '"projecting"' in line:
            stamp = json.loads(line)["timestamp"]
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        if kind == "peer" and "The application started" in line:
            stamp = line[1 : line.index("]")]  # its logging's asctime, local time
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def stopped_line(log: Path) -> dict[str, Any]:
    """Our projector's last "stopped" log line (its counts: applied, redelivered...)."""
    found: dict[str, Any] = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"stopped"' in line:
            try:
                found = json.loads(line)
            except ValueError:
                continue
    return found


# --- scenarios ------------------------------------------------------------------------------


def backlog(bench: Bench, side: Side, total: int, cars: int, last_seq: int) -> dict[str, Any]:
    """Process start -> the whole topic committed; then check every document is current."""
    ends = bench.ends(side.topic)
    server = bench.server_process()
    server_before = cpu_seconds(server)
    load_before = load()
    started, wall = time.perf_counter(), time.time()
    process = bench.start(side, f"backlog-{side.group}")
    watched = psutil.Process(process.pid)
    bench.wait_caught_up(side, process, ends, 900)
    seconds = time.perf_counter() - started
    consumer_cpu = cpu_seconds(watched)
    server_cpu = cpu_seconds(server) - server_before
    code = stop(process)
    current = bench.twins(side).count_documents({side.seq_path: last_seq})
    consuming = started_at(bench.work / f"backlog-{side.group}.log", side.kind)
    return {
        "events": total,
        "seconds": round(seconds, 1),
        "start_s": round(consuming - wall, 1) if consuming else None,
        "events_per_s": round(total / seconds),
        "consumer_cpu_us_per_event": round(consumer_cpu / total * 1e6, 1),
        "server_cpu_us_per_event": round(server_cpu / total * 1e6, 1),
        "documents_current": current,
        "cars": cars,
        "exit_code": code,
        "load_before_after": f"{load_before} / {load()}",
    }


def summed(collection: Collection[Any], match: dict[str, Any], path: str) -> int:
    """The sum of a numeric field over the matching documents."""
    pipeline = [{"$match": match}, {"$group": {"_id": None, "n": {"$sum": f"${path}"}}}]
    for doc in collection.aggregate(pipeline):
        return int(doc["n"])
    return 0


def snapshot(collection: Collection[Any], seq_path: str) -> dict[str, int]:
    return {doc["_id"]: nested(doc, seq_path) for doc in collection.find({}, {seq_path: 1})}


def crash(bench: Bench, side: Side, total: int, cars: int, last_seq: int) -> dict[str, Any]:
    """kill -9 mid-stream, restart; what the documents did meanwhile, what was written twice."""
    ends = bench.ends(side.topic)
    twins = bench.twins(side)
    first_log = bench.work / f"crash-{side.group}-1.log"
    process = bench.start(side, first_log.stem)
    if side.kind == "peer":
        # Kill inside its at-least-once window: records written (its sink logs each bulk),
        # their offsets not committed yet (it commits after every partition's bulk).
        def written_not_committed() -> bool:
            if process.poll() is not None:
                raise Died(f"peer exited with {process.returncode}")
            return sink_writes(first_log) > sum(bench.committed(side).values())

        wait_for(written_not_committed, 600, "a bulk written", interval=0.05, fatal=(Died,))
    else:
        # Ours commits after the whole batch: kill once a quarter of the cars are written.
        def some_written() -> bool:
            if process.poll() is not None:
                raise Died(f"ours exited with {process.returncode}")
            return twins.count_documents({}) >= cars // 4

        wait_for(some_written, 600, "a quarter of the twins", interval=0.1, fatal=(Died,))
    process.kill()  # SIGKILL: no flush, no commit, no goodbye
    process.wait(30)
    committed = sum(bench.committed(side).values())
    held = snapshot(twins, side.seq_path)
    poller = Poller(twins, side.seq_path, None, 0.25)
    poller.start()
    second_log = bench.work / f"crash-{side.group}-2.log"
    restarted = bench.start(side, second_log.stem)
    bench.wait_caught_up(side, restarted, ends, 900)
    code = stop(restarted)
    back = went_back(held, poller.finish())
    result: dict[str, Any] = {
        "documents_at_kill": len(held),
        "committed_at_kill": committed,
        "documents_went_back": len(back),
        "documents_polled_every_s": poller.every,
        "polls": poller.polls,
        "documents_current_at_end": twins.count_documents({side.seq_path: last_seq}),
        "exit_code": code,
    }
    if side.kind == "peer":
        before, after = sink_writes(first_log), sink_writes(second_log)
        result |= {
            "writes_before_kill": before,
            "writes_after_restart": after,
            # Written, not committed, and so read and written again after the restart.
            "written_not_committed_at_kill": before - committed,
            "writes_repeated": before + after - total,
        }
    else:
        counted = summed(twins, {}, "counters.readings_applied")
        stats = stopped_line(second_log)
        result |= {
            "readings_counted": counted,
            "readings_counted_twice": counted - total,
            "redelivered_after_restart": stats.get("redelivered"),
            "twins_written_after_restart": stats.get("cars_written"),
            # Cars whose twin was written before the kill and again after it.
            "twins_rewritten": (stats.get("cars_written") or 0) + len(held) - cars,
        }
    return result


def late(bench: Bench, sides: list[Side], late_cars: int, last_seq: int) -> dict[str, Any]:
    """One older reading per car (between two of the backlog's middle ones, coolant 140 °C) for
    ``late_cars`` cars, read by each side's backlog group; what the documents show after."""
    topic = sides[0].topic
    middle = last_seq // SEQ_STEP // 2  # between this step and the next: older than the last
    late_seq = middle * SEQ_STEP + SEQ_STEP // 2
    late_time = BASE_TIME_MS + middle * STEP_MS + STEP_MS // 2
    kafka = producer(bench.settings)
    records = (reading(car, late_seq, late_time, coolant=140.0) for car in range(late_cars))
    sent = send(kafka, topic, records)
    assert kafka.flush(60) == 0
    ids = [f"car{car}" for car in range(late_cars)]
    out: dict[str, Any] = {"late_readings": sent, "late_seq": late_seq, "newest_seq": last_seq}
    mine = {"_id": {"$in": ids}}
    for side in sides:
        twins = bench.twins(side)
        before = {doc["_id"]: doc for doc in twins.find(mine)}
        ends = bench.ends(topic)
        process = bench.start(side, f"late-{side.group}")
        bench.wait_caught_up(side, process, ends, 300)
        stop(process)
        after = {doc["_id"]: doc for doc in twins.find(mine)}
        if side.kind == "peer":
            out[side.kind] = {
                "documents_back_in_time": twins.count_documents(mine | {"seq": late_seq}),
                "documents_newest_kept": twins.count_documents(mine | {"seq": last_seq}),
                "documents_coolant_140": twins.count_documents(mine | {"coolant_temp": 140.0}),
                "documents_changed": sum(after[car] != before.get(car) for car in after),
            }
        else:
            out[side.kind] = {
                "documents_back_in_time": twins.count_documents(
                    mine | {"last_reading.seq": late_seq}
                ),
                "documents_newest_kept": twins.count_documents(
                    mine | {"last_reading.seq": last_seq}
                ),
                "documents_coolant_140": twins.count_documents(
                    mine | {"reported.coolant_temp.value": 140.0}
                ),
                "health_changed": sum(
                    after[car].get("health") != before.get(car, {}).get("health") for car in after
                ),
                "late_counted": summed(twins, mine, "counters.late_skipped"),
            }
    return out


@dataclass
class LiveLoad:
    cars: int
    rate: int
    seconds: float
    probes: int
    poll: float


def stream(
    kafka: Any, topic: str, spec: LiveLoad, probes: set[str]
) -> tuple[dict[tuple[str, int], float], float]:
    """``spec.rate`` readings/s round the fleet (seq 1, 2... per car), event time = now.
    Returns when each probe car's readings were produced, and the seconds it took."""
    codec = telemetry_codec()
    produced: dict[tuple[str, int], float] = {}
    total = int(spec.rate * spec.seconds)
    pace = threading.Event()  # never set: its wait() paces the producer to the rate
    tick = max(1, spec.rate // 100)  # readings produced together, ~10 ms apart
    started = time.monotonic()
    n = 0
    while n < total:
        pace.wait(max(0.0, started + n / spec.rate - time.monotonic()))
        for k in range(n, min(total, n + tick)):
            car, seq = k % spec.cars, 1 + k // spec.cars
            at = time.time()
            record = reading(car, seq, int(at * 1000))
            kafka.produce(topic, key=record["car_id"], value=codec.encode(record))
            if record["car_id"] in probes:
                produced[(record["car_id"], seq)] = at
        kafka.poll(0)
        n = min(total, n + tick)
    return produced, time.monotonic() - started


def live(bench: Bench, kind: str, spec: LiveLoad) -> dict[str, Any]:
    """A steady stream at a fixed rate; produce -> document freshness of some probe cars."""
    name = f"live{spec.rate}-{kind}"
    side = bench.side(kind, bench.new_topic(name), name)
    process = bench.start(side, f"live-{side.group}")
    kafka = producer(bench.settings)
    now_ms = int(time.time() * 1000)
    send(kafka, side.topic, (reading(car, 0, now_ms) for car in range(spec.cars)))
    assert kafka.flush(60) == 0
    # Warm: every car has its document before the measured stream begins.
    bench.wait_caught_up(side, process, bench.ends(side.topic), 300)
    every = max(1, spec.cars // spec.probes)
    probes = [f"car{car}" for car in range(0, spec.cars, every)][: spec.probes]
    probe_set = set(probes)
    poller = Poller(bench.twins(side), side.seq_path, probes, spec.poll)
    poller.start()
    server = bench.server_process()
    server_before = cpu_seconds(server)
    watched = psutil.Process(process.pid)
    consumer_before = cpu_seconds(watched)
    load_before = load()
    produced, produce_seconds = stream(kafka, side.topic, spec, probe_set)
    assert kafka.flush(60) == 0
    end_of_stream = time.monotonic()
    lag_at_end = sum(bench.ends(side.topic).values()) - sum(bench.committed(side).values())
    newest = {car: max(s for c, s in produced if c == car) for car in probes}

    def probes_current() -> bool:
        if process.poll() is not None:
            raise Died(f"{kind} exited with {process.returncode}")
        seen: dict[str, int] = {}
        for car, seq, _at in poller.observed:
            seen[car] = max(seq, seen.get(car, -1))
        return all(seen.get(car, -1) >= seq for car, seq in newest.items())

    wait_for(
        probes_current, 300, f"{kind}: every probe's last reading", interval=0.2, fatal=(Died,)
    )
    drained_after = time.monotonic() - end_of_stream
    consumer_cpu = cpu_seconds(watched) - consumer_before
    server_cpu = cpu_seconds(server) - server_before
    observed = poller.finish()
    stop(process)
    ages = freshness(produced, observed)
    total = int(spec.rate * spec.seconds)
    return {
        "readings": total,
        "offered_per_s": round(total / produce_seconds),
        "probes": len(probes),
        "samples": len(ages),
        "p50_s": percentile(ages, 50),
        "p99_s": percentile(ages, 99),
        "max_s": round(max(ages), 2) if ages else None,
        "lag_when_the_stream_ended": lag_at_end,
        "probes_current_s_after_the_stream_ended": round(drained_after, 1),
        "consumer_cpu_us_per_reading": round(consumer_cpu / total * 1e6, 1),
        "server_cpu_us_per_reading": round(server_cpu / total * 1e6, 1),
        "load_before_after": f"{load_before} / {load()}",
    }


# --- results --------------------------------------------------------------------------------


def git_commit() -> str:
    """HEAD, and whether the working tree differs from it (the bench itself, say)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.strip()

    try:
        dirty = bool(git("status", "--porcelain", "--", "bench", "fleet", "twin"))
        return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def server_name(stack: Stack) -> str:
    for service in stack.managed():
        if service.name == "mongodb":
            program = Path(service.command()[0]).name
            if program == rust_server.PROGRAM:
                return f"{program} ({rust_server.CRATE} {rust_server.VERSION})"
            return program
    return "external"


def markdown(r: dict[str, Any]) -> str:
    b = r["backlog"]
    c, lr, lv = r["crash"], r["late"], r["live"]

    def row(name: str, f: dict[str, Any], ratio: str) -> str:
        return (
            f"| {name} | {f['events']:,} | {f['seconds']} | {f['start_s']} | "
            f"{f['events_per_s']:,} | {ratio} | {f['consumer_cpu_us_per_event']} | "
            f"{f['server_cpu_us_per_event']} | {f['documents_current']:,} of {f['cars']:,} | "
            f"{f['load_before_after']} |"
        )

    lines = [
        f"# Our twin projector beside a real peer ({r['date']}, commit {r['commit']})",
        "",
        f"`{r['command']}`",
        "",
        f"Server: **{r['mongodb_server']}**, one stack of the bench's own, each side into its "
        f"own database. Peer: {r['peer']['versions']} in its own venv; {r['peer']['how']}. "
        f"Ours: `fleet twin run`, default settings. {r['machine']['cpus']} cores, load "
        f"average {r['load']['before']} before, {r['load']['after']} after. Indicative figures.",
        "",
        f"## Backlog: {b['cars']:,} cars x {b['readings_per_car']} readings, one topic, "
        "one side after the other",
        "",
        "Time from starting the process until its group has committed the whole topic "
        "(both commit after their writes); start = until it said it was consuming. CPU "
        "seconds of the consumer process and of the server, per event.",
        "",
        "| side | events | s | start s | events/s | ratio to the peer | consumer CPU µs/event | "
        "server CPU µs/event | documents current | load before / after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        row("peer: Quix Streams + MongoDBSink", b["peer"], "1"),
        row(
            "ours, twin-change events on (default)",
            b["ours_changes_on"],
            f"**{b['ratio_changes_on']}x**",
        ),
        row(
            "ours, twin-change events off",
            b["ours_changes_off"],
            f"**{b['ratio_changes_off']}x**",
        ),
        "",
        f"Goal: >= {r['goal_ratio']}x the peer's events/s. Measured: **{b['ratio_changes_on']}x** "
        f"with change events (the default), **{b['ratio_changes_off']}x** without.",
        "",
        "## Freshness under live load",
        "",
        f"Readings produced straight to Kafka at a fixed rate for {lv['seconds']} s per side "
        f"(each car in turn, event time = produce time); {lv['probes']} probe cars' documents "
        f"polled every {lv['poll']} s (the resolution); freshness = produce -> the first poll "
        "showing that reading or a newer one. One side at a time, each caught up first. "
        "'Behind at the end': readings produced and not yet committed when the stream stopped.",
        "",
        "| readings/s, cars | side | samples | p50 s | p99 s | max s | behind at the end | "
        "all probes current (s after the end) | consumer CPU µs/reading | "
        "server CPU µs/reading | load before / after |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for phase in lv["phases"]:
        for name in ("peer", "ours"):
            f = phase[name]
            lines.append(
                f"| {phase['rate']:,}/s (offered {f['offered_per_s']:,}), {phase['cars']:,} | "
                f"{name} | {f['samples']} | {f['p50_s']} | {f['p99_s']} | {f['max_s']} | "
                f"{f['lag_when_the_stream_ended']:,} | "
                f"{f['probes_current_s_after_the_stream_ended']} | "
                f"{f['consumer_cpu_us_per_reading']} | {f['server_cpu_us_per_reading']} | "
                f"{f['load_before_after']} |"
            )
    lp, lo, cp, co = lr["peer"], lr["ours"], c["peer"], c["ours"]
    lines += [
        "",
        "## What at-least-once without an event-time guard costs (observed)",
        "",
        "| case | peer | ours |",
        "| --- | --- | --- |",
        f"| a late reading: one older reading (seq {lr['late_seq']}, coolant 140 °C) for "
        f"{lr['late_readings']:,} cars whose newest is seq {lr['newest_seq']} | "
        f"{lp['documents_back_in_time']:,} documents went back in time to it "
        f"({lp['documents_coolant_140']:,} show coolant 140 °C; {lp['documents_changed']:,} "
        f"changed) | {lo['documents_newest_kept']:,} twins kept the newest reading, "
        f"{lo['documents_back_in_time']} went back, {lo['documents_coolant_140']} show "
        f"140 °C, health changed on {lo['health_changed']}; {lo['late_counted']:,} counted "
        "late |",
        f"| kill -9 mid-stream (peer: {cp['written_not_committed_at_kill']:,} records written, "
        f"not committed; ours: {co['documents_at_kill']:,} twins written, batch not "
        f"committed), restart: documents seen going back to an older reading than at the "
        f"kill (all polled every {cp['documents_polled_every_s']} s) | "
        f"{cp['documents_went_back']:,} of {cp['documents_at_kill']:,} | "
        f"{co['documents_went_back']:,} of {co['documents_at_kill']:,} |",
        f"| same: writes repeated | {cp['writes_repeated']:,} records written again (its sink "
        f"logged {cp['writes_before_kill']:,} before the kill and {cp['writes_after_restart']:,}"
        f" after, for {b['events']:,} readings) | {co['redelivered_after_restart']:,} events "
        "redelivered, no-ops by the twins' positions (twins written again: "
        f"{co['twins_rewritten']}) |",
        f"| same: readings counted twice | nothing counted (a `$set` of the reading) | "
        f"{co['readings_counted_twice']} ({co['readings_counted']:,} counted for "
        f"{b['events']:,}) |",
        f"| same: documents current at the end | {cp['documents_current_at_end']:,} | "
        f"{co['documents_current_at_end']:,} |",
    ]
    return "\n".join(lines) + "\n"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cars", type=int, default=10_000)
    parser.add_argument("--readings", type=int, default=10, help="readings per car")
    parser.add_argument("--late-cars", type=int, default=1_000)
    parser.add_argument(
        "--live", default="1000:10000,250:2500", help="live phases: readings/s:cars,..."
    )
    parser.add_argument("--live-seconds", type=float, default=30.0, help="per phase and side")
    parser.add_argument("--probes", type=int, default=100, help="cars whose documents are polled")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between probe polls")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--markdown-only", action="store_true", help="no run: rewrite the .md from the .json"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "peer.json")
    args = parser.parse_args()
    if args.quick:
        args.cars, args.readings, args.late_cars = 1_000, 5, 100
        args.live, args.live_seconds, args.probes = "200:1000", 15.0, 20
    return args


def scenarios(bench: Bench, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Backlog, crash, late reading, live load: each figure into ``results``."""
    settings = bench.settings
    topic = bench.new_topic("backlog")
    kafka = producer(settings)
    total = send(kafka, topic, backlog_readings(args.cars, args.readings))
    assert kafka.flush(120) == 0
    last_seq = (args.readings - 1) * SEQ_STEP
    sides = {
        "peer": bench.side("peer", topic, "peer"),
        "ours_changes_on": bench.side("ours", topic, "ours-on"),
        "ours_changes_off": bench.side("ours", topic, "ours-off", emit_changes=False),
    }
    runs: dict[str, Any] = {"cars": args.cars, "readings_per_car": args.readings}
    runs["events"] = total
    for name, side in sides.items():
        print(f"backlog: {name} ...", flush=True)
        runs[name] = backlog(bench, side, total, args.cars, last_seq)
        print(f"  {runs[name]['events_per_s']} events/s", flush=True)
    peer_rate = runs["peer"]["events_per_s"]
    runs["ratio_changes_on"] = round(runs["ours_changes_on"]["events_per_s"] / peer_rate, 2)
    runs["ratio_changes_off"] = round(runs["ours_changes_off"]["events_per_s"] / peer_rate, 2)
    results["backlog"] = runs

    results["crash"] = {}
    for kind in ("peer", "ours"):
        print(f"crash: {kind} ...", flush=True)
        side = bench.side(kind, topic, f"crash-{kind}")
        results["crash"][kind] = crash(bench, side, total, args.cars, last_seq)
        print(f"  {results['crash'][kind]}", flush=True)

    print("late reading ...", flush=True)
    results["late"] = late(
        bench, [sides["peer"], sides["ours_changes_on"]], args.late_cars, last_seq
    )
    print(f"  {results['late']}", flush=True)

    results["live"] = {"seconds": args.live_seconds, "probes": args.probes, "poll": args.poll}
    results["live"]["phases"] = phases = []
    for phase in args.live.split(","):
        rate, cars = (int(n) for n in phase.split(":"))
        spec = LiveLoad(cars, rate, args.live_seconds, args.probes, args.poll)
        figures: dict[str, Any] = {"rate": rate, "cars": cars}
        for kind in ("peer", "ours"):
            print(f"live {rate}/s over {cars} cars: {kind} ...", flush=True)
            figures[kind] = live(bench, kind, spec)
            print(f"  {figures[kind]}", flush=True)
        phases.append(figures)


def main() -> None:
    args = arguments()
    if args.markdown_only:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    base = Settings()
    python = peer_python(base.stack.cache)
    results: dict[str, Any] = {
        "what": "our twin projector beside Quix Streams with its MongoDBSink: same telemetry, "
        "same server, same run",
        "command": shlex.join([".venv/bin/python", "bench/peer.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "caveat": "indicative: 2 shared cores; other work may run on the machine (see load)",
        "machine": {"cpus": os.cpu_count()},
        "load": {"before": load()},
        "goal_ratio": 10,
        "peer": {
            "versions": peer_versions(python),
            "how": "our Avro decoded with our codec (fleet.avro) in a custom Deserializer; "
            "MongoDBSink(update_method='UpdateOne', upsert=True), _id = the Kafka key; "
            "at-least-once, checkpoint every 5 s (its defaults)",
        },
    }
    home = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    os.environ.update(private_stack_environment(home))
    stack = Stack(Settings(), ["kafka", "mongodb"])
    stack.up()
    try:
        results["mongodb_server"] = server_name(stack)
        settings = isolated(Settings())
        work = home / "runs"
        work.mkdir()
        bench = Bench(settings, python, work)
        print(f"server {results['mongodb_server']}; logs in {work}", flush=True)

        scenarios(bench, args, results)
        results["load"]["after"] = load()
    finally:
        stack.down()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def isolated(settings: Settings) -> Settings:
    """Our projector's other topics (anomalies, commands, twin changes: empty here) of its own."""
    suffix = uuid.uuid4().hex[:6]
    topics = settings.topics.model_copy(
        update={
            name: f"bench.peer.{name}.{suffix}"
            for name in ("telemetry", "anomalies", "dead_letters", "models", "commands")
        }
        | {"twin_changes": f"bench.peer.twin-changes.{suffix}"}
    )
    out = settings.model_copy(update={"topics": topics})
    create_topics(clients.kafka_admin(out), topic_specs(out)[1:])
    return out


if __name__ == "__main__":
    main()
