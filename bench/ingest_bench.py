"""Ingest benchmarks: simulator -> Kafka direct, and simulator -> MQTT -> bridge -> Kafka (QoS 1).

    .venv/bin/python bench/ingest_bench.py [--cars 100000] [--direct-steps 10]
        [--mqtt-seconds 60] [--bridges 1] [--only direct|mqtt] [--running]

Starts its own local stack in a temporary folder (as the tests do) unless ``--running`` (then
the FLEET_* settings of the environment are used). Each run uses its own topics. Writes
``bench/results/ingest.json`` and ``bench/results/ingest.md``.

MQTT path: 100,000 cars at one reading per 10 s in real time (10,000 msg/s offered), QoS 1,
published through the gateway account over a few connections; ``--bridges`` `fleet bridge`
processes share the load. Latency is per message, from just before ``publish()`` to Kafka's
append time (the topic uses LogAppendTime; with acks=all on one broker, append is the ack).
Loss is checked: every PUBACKed reading must be in Kafka.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME  # noqa: E402

from fleet import clients  # noqa: E402
from fleet.avro import telemetry_codec  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.stack import Stack  # noqa: E402
from fleet.stack.ports import private_stack_environment  # noqa: E402
from fleet.topics import create_topics, topic_specs  # noqa: E402
from fleet.waiting import wait_for  # noqa: E402
from ingest.outputs import KafkaSink, MqttSink  # noqa: E402
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


def bench_mqtt(  # noqa: PLR0915 (one scenario, start to finish)
    settings: Settings, env: dict[str, str], cars: int, seconds: float, bridges: int
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
    logs = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    processes = [
        subprocess.Popen(
            [FLEET, "bridge", f"--client-id=bench-{n}-{uuid.uuid4().hex[:4]}"],
            env=env,
            stdout=(logs / f"bridge-{n}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for n in range(bridges)
    ]
    consumer = clients.kafka_consumer(
        settings,
        f"bench-{uuid.uuid4().hex[:6]}",
        **{"session.timeout.ms": 6000, "max.poll.interval.ms": 3_600_000},
    )
    consumer.subscribe([settings.topics.telemetry])
    codec = telemetry_codec()
    appended: dict[tuple[str, int], float] = {}

    def drain() -> int:
        for message in consumer.consume(num_messages=10_000, timeout=0.2):
            if message.error():
                continue
            kind, stamp = message.timestamp()
            assert kind == TIMESTAMP_LOG_APPEND_TIME
            record = codec.decode(message.value())
            appended.setdefault((record["car_id"], record["seq"]), stamp / 1000)
        return len(appended)

    sink = MqttSink(settings, qos=1, connections=4, keep_infos=True)
    try:
        # Warm up: every bridge connected, then readings coming through (a shared subscription
        # drops what is published before its first member subscribes).
        wait_for(
            lambda: all(
                "mqtt connected" in (logs / f"bridge-{n}.log").read_text() for n in range(bridges)
            ),
            60,
            "the bridges to connect",
        )
        simulator = FleetSimulator(SimulationConfig(cars=cars, seed=2))
        warm = simulator.step()

        def warmed_up() -> bool:
            sink.send(warm, 0, min(cars, 100))
            return drain() > 0

        wait_for(warmed_up, 60, "warm-up readings in Kafka", interval=1)
        interval_s = simulator.config.interval_ms / 1000
        steps = max(1, round(seconds / interval_s))
        published: dict[tuple[str, int], float] = {}
        infos_before = len(sink.infos or [])
        chunk = 500
        started = time.time()
        for k in range(steps):
            batch = simulator.step()
            for start in range(0, cars, chunk):
                stop = min(cars, start + chunk)
                due = started + (k + start / cars) * interval_s
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)  # pacing the offered load, not synchronisation
                now = time.time()
                for car_id in batch.car_ids[start:stop]:
                    published[(car_id, batch.seq)] = now
                sink.send(batch, start, stop)
        publish_end = time.time()
        sink.close(300)
        infos = (sink.infos or [])[infos_before:]
        acked = {key for key, info in zip(published, infos, strict=True) if info.is_published()}
        with contextlib.suppress(TimeoutError):  # a shortfall is reported as lost below
            wait_for(
                lambda: drain() >= len(acked) and all(key in appended for key in acked),
                max(120.0, seconds * 3),
                "every reading in Kafka",
                interval=0,
            )
        done = time.time()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
        consumer.close()
    latencies = np.array([appended[key] - t for key, t in published.items() if key in appended])
    missing = sum(1 for key in acked if key not in appended)
    last_append = max(appended[key] for key in published if key in appended)
    return {
        "cars": cars,
        "reading_interval_s": interval_s,
        "offered_msg_per_s": round(len(published) / (publish_end - started)),
        "published": len(published),
        "pubacked": len(acked),
        "not_pubacked_in_time": sink.errors,
        "pubacked_in_kafka": len(acked) - missing,
        "lost_pubacked": missing,
        "sustained_msg_per_s": round(len(published) / (last_append - started)),
        "drain_after_publish_end_s": round(done - publish_end, 2),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "latency_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
        "latency_max_ms": round(float(latencies.max()) * 1000, 1),
        "bridges": bridges,
        "qos": 1,
        "goal_msg_per_s": 10_000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cars", type=int, default=100_000)
    parser.add_argument("--direct-steps", type=int, default=10)
    parser.add_argument("--mqtt-seconds", type=float, default=60.0)
    parser.add_argument("--bridges", type=int, default=1)
    parser.add_argument("--only", choices=["direct", "mqtt"])
    parser.add_argument("--running", action="store_true", help="use the FLEET_* stack")
    args = parser.parse_args()

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
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at start (shared with other work: figures are indicative)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        if args.only in (None, "direct"):
            results["kafka_direct"] = bench_direct(settings, args.cars, args.direct_steps)
            print(json.dumps(results["kafka_direct"], indent=2))
        if args.only in (None, "mqtt"):
            results["mqtt_bridge_kafka"] = bench_mqtt(
                settings, env, args.cars, args.mqtt_seconds, args.bridges
            )
            print(json.dumps(results["mqtt_bridge_kafka"], indent=2))
    finally:
        if stack is not None:
            stack.down()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "ingest.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    merged = previous | results
    path.write_text(json.dumps(merged, indent=2) + "\n")
    lines = ["| benchmark | figure | value |", "| --- | --- | --- |"]
    for name in ("kafka_direct", "mqtt_bridge_kafka"):
        for key, value in merged.get(name, {}).items():
            lines.append(f"| {name} | {key} | {value} |")
    (RESULTS / "ingest.md").write_text(
        f"# Ingest benchmarks\n\n{merged['machine']}; {merged['date']}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
