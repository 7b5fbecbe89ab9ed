"""Twin projector vs the MongoDB Kafka sink connector's default write pattern, same data and
same MongoDB-wire server in the same run; plus the projector's memory as the fleet grows.

    .venv/bin/python bench/twin_projector.py [--cars 10000] [--readings 20] [--running]

* projector: `twin.projector.Projector` as `fleet twin run` runs it (batch -> fold per car ->
  one unordered bulk write of one replace per car, guarded by revision -> commit).
* baseline: one replace-with-upsert per event (`ReplaceOne({_id: car}, event, upsert=True)`,
  the connector's default `ReplaceOneDefaultStrategy`), sent as the connector sends them: one
  ordered bulk write per polled batch, offsets committed after it. It keeps only the latest
  event per car (no history, health, event-time guard or positions): it does less work.
* memory: a real `fleet twin run` subprocess per fleet size, peak RSS sampled with psutil.

Starts its own stack on free ports (or, with --running, uses the one FLEET_* points at).
Figures are indicative: 2 shared cores, other work running on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from pymongo import ReplaceOne

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fleet import clients  # noqa: E402
from fleet.avro import telemetry_codec  # noqa: E402
from fleet.contract import SENSORS, WHEELS  # noqa: E402
from fleet.service import Shutdown  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.stack.ports import private_stack_environment  # noqa: E402
from fleet.topics import create_topics, topic_specs  # noqa: E402
from twin.projector import Projector  # noqa: E402

FAST_GROUP = {"session.timeout.ms": "6000"}


def start_stack() -> tuple[Any, dict[str, str]]:
    from fleet.stack import Stack

    home = Path(tempfile.mkdtemp(prefix="twin-bench-"))
    env = private_stack_environment(home)
    os.environ.update(env)
    stack = Stack(Settings(), ["kafka", "mongodb"])
    stack.up()
    return stack, env


def isolated(settings: Settings, name: str) -> Settings:
    suffix = f"{name}-{uuid.uuid4().hex[:6]}"
    topics = settings.topics.model_copy(
        update={"telemetry": f"bench.telemetry.{suffix}", "anomalies": f"bench.anomalies.{suffix}"}
    )
    isolated = settings.model_copy(
        update={
            "topics": topics,
            "groups": settings.groups.model_copy(update={"twin": f"bench-{suffix}"}),
            "mongodb": settings.mongodb.model_copy(update={"database": f"bench_{suffix}"}),
        }
    )
    create_topics(clients.kafka_admin(isolated), topic_specs(isolated)[:2])
    return isolated


def readings(cars: int, steps: int) -> Iterator[list[dict[str, Any]]]:
    """Seed-like readings, one list per step over the whole fleet (as cars report)."""
    for step in range(steps):
        rows = []
        for c in range(cars):
            record: dict[str, Any] = {
                "car_id": f"car{c}",
                "event_time": 1_700_000_000_000 + step * 10_000,
                "seq": step,
            }
            for i, name in enumerate(SENSORS):
                record[name] = float(i + (c + step) % 7)
            for w in WHEELS:
                record[f"tire_pressure_{w}"] = 30 + (c + step) % 5
            record["control_unit_firmware"] = 2000 if c % 25 else 1000
            rows.append(record)
        yield rows


def produce(settings: Settings, steps: Iterator[list[dict[str, Any]]]) -> int:
    producer = clients.kafka_producer(settings, **{"linger.ms": 50, "batch.size": 1_000_000})
    topic = settings.topics.telemetry
    count = 0
    for rows in steps:
        for record, value in zip(rows, telemetry_codec().encode_many(rows), strict=True):
            while True:
                try:
                    producer.produce(topic, key=record["car_id"], value=value)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
            count += 1
    assert producer.flush(120) == 0
    return count


def run_projector(settings: Settings, total: int) -> dict[str, float]:
    shutdown = Shutdown()
    projector = Projector(settings, shutdown, **FAST_GROUP)
    result: dict[str, float] = {}
    started = time.perf_counter()

    def watch() -> None:
        first = None
        while projector.applied.events + projector.applied.redelivered < total:
            if first is None and projector.applied.events:
                first = time.perf_counter()
            time.sleep(0.05)
        result["seconds"] = time.perf_counter() - started
        shutdown.request()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    projector.run()
    watcher.join()
    result["events_per_s"] = total / result["seconds"]
    result["twins_written"] = projector.applied.cars_written
    return result


def run_baseline(settings: Settings, total: int, batch: int) -> dict[str, float]:
    """One replace-with-upsert per event, ordered bulk per poll, commit after the write.

    Stops after ``total`` events (the first ones of the same data): its rate does not depend
    on how many events follow, and the whole run would take an hour at its speed."""
    codec = telemetry_codec()
    collection = clients.mongo_database(settings)["twins_baseline"]
    consumer = clients.kafka_consumer(settings, f"{settings.groups.twin}-baseline", **FAST_GROUP)
    consumer.subscribe([settings.topics.telemetry])
    done = 0
    started = time.perf_counter()
    while done < total:
        messages = consumer.consume(num_messages=min(batch, total - done), timeout=1.0)
        operations = []
        for message in messages:
            if message.error():
                continue
            record = codec.decode(message.value() or b"")
            operations.append(ReplaceOne({"_id": record["car_id"]}, record, upsert=True))
        if operations:
            collection.bulk_write(operations, ordered=True)
            consumer.commit(asynchronous=False)
            done += len(operations)
    seconds = time.perf_counter() - started
    consumer.close()
    return {"events": done, "seconds": seconds, "events_per_s": done / seconds}


def projector_rss(settings: Settings, env: dict[str, str], total: int) -> dict[str, float]:
    """Peak RSS of a real `fleet twin run` while it applies ``total`` events."""
    child_env = (
        os.environ
        | env
        | {
            "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
            "FLEET_TOPICS_ANOMALIES": settings.topics.anomalies,
            "FLEET_GROUPS_TWIN": settings.groups.twin,
            "FLEET_MONGODB_DATABASE": settings.mongodb.database,
            "FLEET_TWIN_BATCH_SIZE": str(settings.twin.batch_size),
            "FLEET_KAFKA_EXTRA": json.dumps(FAST_GROUP),
            "FLEET_LOG_LEVEL": "WARNING",
        }
    )
    fleet = Path(sys.executable).with_name("fleet")
    process = subprocess.Popen([str(fleet), "twin", "run"], env=child_env)
    twins = clients.mongo_database(settings)[settings.twin.collection]
    peak = 0
    started = time.perf_counter()
    try:
        ps = psutil.Process(process.pid)
        while True:
            peak = max(peak, ps.memory_info().rss)
            applied = next(
                iter(twins.aggregate([{"$group": {"_id": None, "n": {"$sum": "$revision"}}}])),
                {"n": 0},
            )["n"]
            if applied >= total:
                break
            if process.poll() is not None:
                raise RuntimeError("fleet twin run exited early")
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(60)
    return {"peak_rss_mb": round(peak / 2**20, 1), "seconds": time.perf_counter() - started}


def memory_only(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Same number of events per run, so every run polls equally full batches: only the
    number of distinct cars grows."""
    base = Settings()
    base = base.model_copy(update={"twin": base.twin.model_copy(update={"batch_size": args.batch})})
    memory = []
    for cars in [int(n) for n in args.memory_cars.split(",") if n]:
        steps = max(1, args.memory_only // cars)
        sized = isolated(base, f"mem{cars}")
        total = produce(sized, readings(cars, steps))
        sized = sized.model_copy(update={"twin": base.twin})
        figures = projector_rss(sized, env, total)
        memory.append({"cars": cars, "events": total, "batch": args.batch, **figures})
        print(f"  memory with {cars} cars, {total} events: {figures['peak_rss_mb']} MB", flush=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["memory_same_events"] = memory
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = [
        "",
        f"Same events per run ({args.memory_only}), {args.batch} events per poll:",
        "",
        "| cars | events | projector peak RSS (MB) |",
        "| ---: | ---: | ---: |",
        *(f"| {m['cars']} | {m['events']} | {m['peak_rss_mb']} |" for m in memory),
    ]
    with args.out.with_suffix(".md").open("a") as md:
        md.write("\n".join(table) + "\n")
    print("\n".join(table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cars", type=int, default=10_000)
    parser.add_argument("--readings", type=int, default=20, help="readings per car")
    parser.add_argument("--batch", type=int, default=20_000, help="events per poll (both)")
    parser.add_argument("--memory-cars", default="1000,10000,100000")
    parser.add_argument("--memory-readings", type=int, default=1)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    parser.add_argument("--running", action="store_true", help="use the stack FLEET_* names")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "twin.json")
    parser.add_argument(
        "--memory-only",
        type=int,
        metavar="EVENTS",
        default=0,
        help="only the memory runs, each with this many events (readings = EVENTS / cars) and "
        "--batch events per poll, added to --out as memory_same_events",
    )
    args = parser.parse_args()

    stack, env = (None, {}) if args.running else start_stack()
    if args.memory_only:
        try:
            memory_only(args, env)
        finally:
            if stack is not None:
                stack.down()
        return
    try:
        base = Settings()
        base = base.model_copy(
            update={"twin": base.twin.model_copy(update={"batch_size": args.batch})}
        )
        settings = isolated(base, "speed")
        print(f"producing {args.cars * args.readings} events for {args.cars} cars", flush=True)
        total = produce(settings, readings(args.cars, args.readings))
        print("baseline (one replace-with-upsert per event)...", flush=True)
        baseline = run_baseline(settings, min(total, args.baseline_events), args.batch)
        print(f"  {baseline['events_per_s']:.0f} events/s", flush=True)
        print("projector...", flush=True)
        projector = run_projector(settings, total)
        print(f"  {projector['events_per_s']:.0f} events/s", flush=True)

        memory = []
        for cars in [int(n) for n in args.memory_cars.split(",") if n]:
            sized = isolated(base, f"mem{cars}")
            produce(sized, readings(cars, args.memory_readings))
            sized = sized.model_copy(update={"twin": base.twin})
            figures = projector_rss(sized, env, cars * args.memory_readings)
            memory.append({"cars": cars, "events": cars * args.memory_readings, **figures})
            print(f"  memory with {cars} cars: {figures['peak_rss_mb']} MB", flush=True)

        results = {
            "what": "twin projector vs one replace-with-upsert per event (MongoDB Kafka sink "
            "connector default), same data, same SecantusDB, same run",
            "caveat": "indicative: 2 shared cores, other helpers' stacks running on the machine",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "cars": args.cars,
            "events": total,
            "batch": args.batch,
            "baseline": baseline,
            "projector": projector,
            "ratio": round(projector["events_per_s"] / baseline["events_per_s"], 2),
            "memory": memory,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        table = [
            "| run | events | events/s |",
            "| --- | ---: | ---: |",
            f"| baseline (replace-upsert per event) | {baseline['events']} "
            f"| {baseline['events_per_s']:.0f} |",
            f"| projector | {total} | {projector['events_per_s']:.0f} |",
            f"| ratio | | {results['ratio']}x |",
            "",
            "| cars | events | projector peak RSS (MB) |",
            "| ---: | ---: | ---: |",
            *(f"| {m['cars']} | {m['events']} | {m['peak_rss_mb']} |" for m in memory),
        ]
        args.out.with_suffix(".md").write_text("\n".join(table) + "\n")
        print("\n".join(table))
    finally:
        if stack is not None:
            stack.down()


if __name__ == "__main__":
    main()
