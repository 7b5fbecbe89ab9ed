"""Ingest benchmarks: simulator -> Kafka direct, and simulator -> MQTT -> bridge -> Kafka (QoS 1).

    .venv/bin/python bench/ingest_bench.py [--cars 100000] [--direct-steps 10]
        [--mqtt-seconds 60] [--bridges 2] [--publishers 2] [--only direct|mqtt] [--running]

Starts its own local stack in a temporary folder (as the tests do) unless ``--running`` (then
the FLEET_* settings of the environment are used). Each run uses its own topics. Writes
``bench/results/ingest.json`` and ``bench/results/ingest.md``.

MQTT path: 100,000 cars at one reading per 10 s in real time (10,000 msg/s offered), QoS 1,
published through the gateway account by ``--publishers`` processes (each owns a slice of the
cars, two connections each, ``ingest.outputs.BulkMqttSink``); one
`fleet bridge --processes=<--bridges>` shares the load. Latency is per message, from just
before the publish to Kafka's append time (the topic uses LogAppendTime; with acks=all on one
broker, append is the ack). Loss is checked: every PUBACKed reading must be in Kafka. CPU
seconds of each part (bridges, publishers, Mosquitto, Kafka) and of the whole machine are
recorded over the run, so figures from a shared machine can be judged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME  # noqa: E402

from fleet import clients  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.stack import Stack  # noqa: E402
from fleet.stack.ports import private_stack_environment  # noqa: E402
from fleet.stack.process import read_pidfile  # noqa: E402
from fleet.topics import create_topics, topic_specs  # noqa: E402
from fleet.waiting import wait_for  # noqa: E402
from ingest.outputs import BulkMqttSink, KafkaSink, MqttSink  # noqa: E402
from ingest.simulator import FleetSimulator, SimulationConfig  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FLEET = str(Path(sys.executable).parent / "fleet")


def isolated(settings: Settings, log_append_time: bool = False) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(
        update={
            name: f"{getattr(settings.topics, name)}.bench.{suffix}"
            for name in ("telemetry", "anomalies", "dead_letters", "models")
        }
    )
    groups = settings.groups.model_copy(update={"bridge": f"bench-bridge-{suffix}"})
    out = settings.model_copy(update={"topics": topics, "groups": groups})
    specs = topic_specs(out)
    if log_append_time:
        for spec in specs:
            spec.config["message.timestamp.type"] = "LogAppendTime"
    create_topics(clients.kafka_admin(out), specs)
    return out


def bench_direct(settings: Settings, cars: int, steps: int) -> dict[str, Any]:
    settings = isolated(settings)
    simulator = FleetSimulator(SimulationConfig(cars=cars, seed=1))
    # Generation alone (model + bulk Avro), then generation + Kafka with confirmations.
    sink = KafkaSink(settings)
    started = time.perf_counter()
    generated = 0
    for batch in simulator.run(2):
        generated += len(sink.encoder.encode(batch))
    generate_rate = generated / (time.perf_counter() - started)
    started = time.perf_counter()
    for batch in simulator.run(steps):
        sink.send(batch)
    sink.close(300)
    elapsed = time.perf_counter() - started
    return {
        "cars": cars,
        "steps": steps,
        "events": sink.sent,
        "errors": sink.errors,
        "seconds": round(elapsed, 2),
        "events_per_s": round(sink.sent / elapsed),
        "generate_and_encode_only_events_per_s": round(generate_rate),
        "goal_events_per_s": 200_000,
    }


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos


def car_and_seq(value: bytes) -> tuple[str, int]:
    """car_id and seq of a telemetry-v1 message without decoding the rest (fast)."""
    length, pos = _varint(value, 10)  # after the 10-byte single-object header
    car = value[pos : pos + length].decode()
    _event_time, pos = _varint(value, pos + length)
    seq, _ = _varint(value, pos)
    return car, seq


def publisher_worker(args: argparse.Namespace) -> None:
    """One publisher process: cars [lo, hi) of the fleet, paced over each reading interval."""
    settings = Settings()
    # Event times follow the wall clock from the first published step on (bench/e2e.py runs
    # phases at different intervals one after the other: times and seqs keep increasing).
    interval_ms = args.interval_ms or SimulationConfig.interval_ms
    first_ms = int(args.start_at * 1000) if args.interval_ms else SimulationConfig.start_time_ms
    config = SimulationConfig(
        cars=args.cars,
        seed=2,
        interval_ms=interval_ms,
        start_time_ms=first_ms - (args.first_step + 1) * interval_ms,
    )
    simulator = FleetSimulator(config)
    for _ in range(args.first_step + 1):
        simulator.step()  # the warm-up step the main process published, and earlier phases'
    lo, hi = args.slice
    sink = BulkMqttSink(settings, connections=2)
    interval_s = simulator.config.interval_ms / 1000
    chunk = 500
    cars: list[int] = []
    seqs: list[int] = []
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(delay)  # every publisher starts together
    cpu_at_start = time.process_time()  # not counting imports and connecting
    for k in range(args.steps):
        batch = simulator.step()
        for start in range(lo, hi, chunk):
            stop = min(hi, start + chunk)
            delay = args.start_at + (k + (start - lo) / (hi - lo)) * interval_s - time.time()
            if delay > 0:
                time.sleep(delay)  # pacing the offered load, not synchronisation
            sink.send(batch, start, stop)
            cars.extend(range(start, stop))
            seqs.extend([batch.seq] * (stop - start))
    publish_end = time.time()
    sink.close(300)
    np.savez(
        args.out,
        car=np.array(cars, dtype=np.int32),
        seq=np.array(seqs, dtype=np.int64),
        sent_at=np.array(sink.sent_at, dtype=np.float64),
        status=np.frombuffer(bytes(sink.status), dtype=np.uint8),
        publish_end=np.array(publish_end),
        cpu_s=np.array(time.process_time() - cpu_at_start),
    )


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def server_processes(settings: Settings) -> dict[str, list[psutil.Process]]:
    """The local stack's Mosquitto and Kafka (empty when they are external)."""
    found: dict[str, list[psutil.Process]] = {}
    for service in Stack(settings, only=["mosquitto", "kafka"]).managed():
        record = read_pidfile(service.pidfile)
        process = record.process() if record else None
        found[service.name] = [process] if process else []
    return found


def bench_mqtt(  # noqa: PLR0915 (one scenario, start to finish)
    settings: Settings,
    env: dict[str, str],
    cars: int,
    seconds: float,
    *,
    bridges: int,
    publishers: int,
) -> dict[str, Any]:
    settings = isolated(settings, log_append_time=True)
    env = env | {
        "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
        "FLEET_TOPICS_DEAD_LETTERS": settings.topics.dead_letters,
        "FLEET_GROUPS_BRIDGE": settings.groups.bridge,
        "FLEET_LOG_FORMAT": "json",
        # Bench sessions are throwaway: let the broker forget them soon after the run.
        "FLEET_INGEST_BRIDGE_SESSION_EXPIRY": "120",
    }
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    log_path = work / "bridge.log"
    pool = subprocess.Popen(
        [FLEET, "bridge", f"--processes={bridges}", f"--client-id=bench-{uuid.uuid4().hex[:6]}"],
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    consumer = clients.kafka_consumer(
        settings,
        f"bench-{uuid.uuid4().hex[:6]}",
        **{"session.timeout.ms": 6000, "max.poll.interval.ms": 3_600_000},
    )
    consumer.subscribe([settings.topics.telemetry])
    appended: dict[tuple[str, int], float] = {}

    def drain() -> int:
        for message in consumer.consume(num_messages=10_000, timeout=0.2):
            if message.error():
                continue
            kind, stamp = message.timestamp()
            assert kind == TIMESTAMP_LOG_APPEND_TIME
            appended.setdefault(car_and_seq(message.value()), stamp / 1000)
        return len(appended)

    workers: list[subprocess.Popen[bytes]] = []
    try:
        # Warm up: every bridge connected, then readings coming through (a shared subscription
        # drops what is published before its first member subscribes).
        wait_for(
            lambda: log_path.read_text().count("mqtt connected") >= bridges,
            90,
            "the bridges to connect",
        )
        simulator = FleetSimulator(SimulationConfig(cars=cars, seed=2))
        warm = simulator.step()
        warm_sink = MqttSink(settings, qos=1, connections=1)

        def warmed_up() -> bool:
            warm_sink.send(warm, 0, min(cars, 100))
            return drain() > 0

        wait_for(warmed_up, 60, "warm-up readings in Kafka", interval=1)
        warm_sink.close(30)
        interval_s = simulator.config.interval_ms / 1000
        steps = max(1, round(seconds / interval_s))
        bridge_processes = [psutil.Process(pool.pid)]
        bridge_processes += bridge_processes[0].children(recursive=True)
        servers = server_processes(settings)
        watched = {"bridges": bridge_processes, **servers}
        cpu_before = {name: cpu_seconds(procs) for name, procs in watched.items()}
        machine_before, measured_from = psutil.cpu_times(), time.time()
        load_before = os.getloadavg()
        started = time.time() + 3  # time for the publishers to connect
        bounds = np.linspace(0, cars, publishers + 1).astype(int)
        for n in range(publishers):
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        f"--cars={cars}",
                        f"--slice={bounds[n]},{bounds[n + 1]}",
                        f"--steps={steps}",
                        f"--start-at={started}",
                        f"--out={work / f'publisher-{n}.npz'}",
                    ],
                    env=env,
                )
            )
        # While the publishers start, nothing flows: what the servers and bridges use now is
        # their cost at rest (Kafka's JVM has a fixed one), shown beside the per-reading cost.
        time.sleep(max(0.0, started - time.time()))  # measuring, not synchronising
        at_rest = {
            name: (cpu_seconds(procs) - cpu_before[name]) / (time.time() - measured_from)
            for name, procs in watched.items()
        }
        for worker in workers:
            if worker.wait() != 0:
                raise RuntimeError(f"a publisher failed (exit {worker.returncode})")
        parts = [np.load(work / f"publisher-{n}.npz") for n in range(publishers)]
        publish_end = max(float(part["publish_end"]) for part in parts)
        names = np.array(simulator.car_ids)
        published: dict[tuple[str, int], float] = {}
        acked: set[tuple[str, int]] = set()
        refused = 0
        for part in parts:
            keys = list(zip(names[part["car"]].tolist(), part["seq"].tolist(), strict=True))
            published.update(zip(keys, part["sent_at"].tolist(), strict=True))
            status = part["status"]
            acked.update(key for key, s in zip(keys, status.tolist(), strict=True) if s == 1)
            refused += int((status == 2).sum())
        with contextlib.suppress(TimeoutError):  # a shortfall is reported as lost below
            wait_for(
                lambda: drain() >= len(acked) and all(key in appended for key in acked),
                max(120.0, seconds * 3),
                "every reading in Kafka",
                interval=0,
            )
        done = time.time()
        cpu = {name: cpu_seconds(procs) - cpu_before[name] for name, procs in watched.items()}
        cpu["publishers"] = sum(float(part["cpu_s"]) for part in parts)
        machine = psutil.cpu_times()
        busy = sum(
            getattr(machine, f) - getattr(machine_before, f)
            for f in ("user", "system", "nice", "irq", "softirq")
        )
        machine_cpu_s = busy
        load_after = os.getloadavg()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        pool.terminate()
        pool.wait(90)
        consumer.close()
    latencies = np.array([appended[key] - t for key, t in published.items() if key in appended])
    missing = sum(1 for key in acked if key not in appended)
    last_append = max(appended[key] for key in published if key in appended)
    window = done - measured_from
    total_msgs = len(published)
    return {
        "cars": cars,
        "reading_interval_s": interval_s,
        "bridge_processes": bridges,
        "publisher_processes": publishers,
        "qos": 1,
        "offered_msg_per_s": round(total_msgs / (publish_end - started)),
        "published": total_msgs,
        "pubacked": len(acked),
        "refused_by_broker": refused,
        "not_pubacked_in_time": total_msgs - len(acked) - refused,
        "pubacked_in_kafka": len(acked) - missing,
        "lost_pubacked": missing,
        "sustained_msg_per_s": round(total_msgs / (last_append - started)),
        "drain_after_publish_end_s": round(done - publish_end, 2),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "latency_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
        "latency_max_ms": round(float(latencies.max()) * 1000, 1),
        # CPU over the run (core-seconds), and per message in microseconds: what each part
        # of the path costs, whatever else the shared machine was doing meanwhile.
        **{f"cpu_s_{name}": round(value, 1) for name, value in cpu.items()},
        **{
            f"cpu_us_per_msg_{name}": round(value / total_msgs * 1e6, 1)
            for name, value in cpu.items()
        },
        "cpu_us_per_msg_total": round(sum(cpu.values()) / total_msgs * 1e6, 1),
        **{f"cpu_pct_at_rest_{name}": round(100 * rate, 1) for name, rate in at_rest.items()},
        # If this run had had the machine to itself: its cores over the CPU per reading.
        "cpu_bound_capacity_msg_per_s": round(
            (os.cpu_count() or 1) * total_msgs / max(sum(cpu.values()), 1e-9)
        ),
        "machine_cpu_busy_pct": round(100 * machine_cpu_s / (window * (os.cpu_count() or 1)), 1),
        "cpu_s_other_work_on_machine": round(machine_cpu_s - sum(cpu.values()), 1),
        "load_average_1m_before_after": f"{load_before[0]:.1f} / {load_after[0]:.1f}",
        "goal_msg_per_s": 10_000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cars", type=int, default=100_000)
    parser.add_argument("--direct-steps", type=int, default=10)
    parser.add_argument("--mqtt-seconds", type=float, default=60.0)
    parser.add_argument("--bridges", type=int, default=2, help="bridge processes")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    # A publisher process (started by the MQTT benchmark itself).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--slice", type=lambda v: tuple(map(int, v.split(","))), help=argparse.SUPPRESS
    )
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--interval-ms", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first-step", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["direct", "mqtt"])
    parser.add_argument("--running", action="store_true", help="use the FLEET_* stack")
    args = parser.parse_args()
    if args.worker:
        publisher_worker(args)
        return

    stack = None
    env = dict(os.environ)
    if not args.running:
        home = Path(tempfile.mkdtemp(prefix="bench-stack-"))
        env |= private_stack_environment(home)
        os.environ.update(env)
        stack = Stack(Settings(), only=["kafka", "mosquitto"])
        stack.up()
    settings = Settings()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; the machine may be shared "
        "with other work: each benchmark records the load average and CPU use it ran under",
    }

    def when() -> dict[str, Any]:
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average_1m_at_start": round(os.getloadavg()[0], 1),
        }

    try:
        if args.only in (None, "direct"):
            started = when()
            results["kafka_direct"] = started | bench_direct(settings, args.cars, args.direct_steps)
            print(json.dumps(results["kafka_direct"], indent=2))
        if args.only in (None, "mqtt"):
            started = when()
            results["mqtt_bridge_kafka"] = started | bench_mqtt(
                settings,
                env,
                args.cars,
                args.mqtt_seconds,
                bridges=args.bridges,
                publishers=args.publishers,
            )
            print(json.dumps(results["mqtt_bridge_kafka"], indent=2))
    finally:
        if stack is not None:
            stack.down()
    write_results(results)


def write_results(results: dict[str, Any]) -> None:
    """Merge into bench/results/ingest.json (a scenario not run keeps its figures) and .md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "ingest.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    previous.pop("date", None)  # (older files had one date for all)
    merged = previous | results
    path.write_text(json.dumps(merged, indent=2) + "\n")
    lines = ["| benchmark | figure | value |", "| --- | --- | --- |"]
    for name in ("kafka_direct", "mqtt_bridge_kafka"):
        for key, value in merged.get(name, {}).items():
            lines.append(f"| {name} | {key} | {value} |")
    summary = summarize(merged)
    (RESULTS / "ingest.md").write_text(
        f"# Ingest benchmarks\n\n{merged['machine']}.\n\n"
        + "".join(f"- {line}\n" for line in summary)
        + "\n"
        + "\n".join(lines)
        + "\n"
    )
    print(f"wrote {path}")
    print("\n".join(summary))


def summarize(results: dict[str, Any]) -> list[str]:
    """One line per benchmark: the figure against its goal, and the conditions."""
    lines = []
    direct = results.get("kafka_direct")
    if direct:
        lines.append(
            f"simulator -> Kafka direct: {direct['events_per_s']:,} events/s "
            f"(goal {direct['goal_events_per_s']:,}), {direct['errors']} errors; "
            f"load average {direct.get('load_average_1m_at_start', '?')} at start, "
            f"{direct.get('date', '?')}"
        )
    mqtt = results.get("mqtt_bridge_kafka")
    if mqtt:
        lines.append(
            f"simulator -> MQTT -> bridge -> Kafka, QoS 1, {mqtt['cars']:,} cars: "
            f"{mqtt['sustained_msg_per_s']:,} msg/s sustained (offered "
            f"{mqtt['offered_msg_per_s']:,}, goal {mqtt['goal_msg_per_s']:,}), "
            f"{mqtt['lost_pubacked']} of {mqtt['pubacked']:,} PUBACKed readings lost, latency "
            f"p50 {mqtt['latency_p50_ms']:,} ms / p99 {mqtt['latency_p99_ms']:,} ms; "
            f"{mqtt['bridge_processes']} bridge and {mqtt['publisher_processes']} publisher "
            f"processes; load average {mqtt['load_average_1m_before_after']} (before / after), "
            f"machine CPU {mqtt['machine_cpu_busy_pct']}% busy, "
            f"{mqtt['cpu_s_other_work_on_machine']} CPU-s of it other work; {mqtt['date']}"
        )
        if "cpu_bound_capacity_msg_per_s" in mqtt:
            lines.append(
                f"CPU per reading on that path: {mqtt['cpu_us_per_msg_total']} us "
                f"(bridges {mqtt['cpu_us_per_msg_bridges']}, publishers "
                f"{mqtt['cpu_us_per_msg_publishers']}, Mosquitto "
                f"{mqtt.get('cpu_us_per_msg_mosquitto', '?')}, Kafka "
                f"{mqtt.get('cpu_us_per_msg_kafka', '?')}): the whole machine's cores would "
                f"carry ~{mqtt['cpu_bound_capacity_msg_per_s']:,} msg/s"
            )
    return lines


if __name__ == "__main__":
    main()
