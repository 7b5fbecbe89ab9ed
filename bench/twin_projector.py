"""Twin projector vs the MongoDB Kafka sink connector's default write pattern, same data and
same MongoDB-wire server in the same run; plus the projector's peak memory as the fleet grows.

    .venv/bin/python bench/twin_projector.py                 # the whole benchmark, ~15 min
    .venv/bin/python bench/twin_projector.py --quick         # a smoke run, ~2 min

* baseline: one replace-with-upsert per event, `ReplaceOne({_id: car}, event, upsert=True)`
  (the connector's default `ReplaceOneDefaultStrategy` with the key as `_id`), sent as the
  connector sends them: one ordered bulk write per poll of `--baseline-poll` records (Kafka
  Connect's default `max.poll.records` is 500), offsets committed after the write. It keeps
  only the latest event per car: no history, health, event-time guard or Kafka positions.
* projector: `twin.projector.Projector` exactly as `fleet twin run` runs it, default settings
  (adaptive poll up to `--batch` events -> fold per car -> bulk write of one replace per car,
  guarded by revision and positions, in one transaction per chunk -> commit).
* memory: a real `fleet twin run` subprocess per fleet size, the same number of events for
  every size (so only the number of distinct cars grows), peak RSS sampled with psutil; done
  when the group's committed offsets reach the end of the topic.

Both speed runs read the same topic from the beginning (a fleet of `--cars` cars, each sending
`--readings` readings in turn) into their own collection of the same SecantusDB server. The
baseline stops after `--baseline-events` (its rate is steady; the whole topic would take it
an hour). Starts its own Kafka + SecantusDB on free ports (or, with --running, uses the stack
FLEET_* points at) and writes bench/results/twin.json and twin.md.
Figures are indicative: 2 shared cores; the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import TopicPartition
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


def load() -> float:
    return round(os.getloadavg()[0], 1)


def start_stack() -> tuple[Any, dict[str, str]]:
    from fleet.stack import Stack

    home = Path(tempfile.mkdtemp(prefix="twin-bench-"))
    env = private_stack_environment(home)
    os.environ.update(env)
    stack = Stack(Settings(), ["kafka", "mongodb"])
    stack.up()
    return stack, env


def isolated(settings: Settings, name: str) -> Settings:
    """Own topics, group and database, so runs never see each other's data."""
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


def run_projector(settings: Settings, total: int) -> dict[str, Any]:
    """The projector in this process until every event is applied."""
    shutdown = Shutdown()
    projector = Projector(settings, shutdown, **FAST_GROUP)
    result: dict[str, Any] = {}
    started = time.perf_counter()

    def watch() -> None:
        while projector.applied.events + projector.applied.redelivered < total:
            time.sleep(0.05)
        result["seconds"] = round(time.perf_counter() - started, 1)
        shutdown.request()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    projector.run()
    watcher.join()
    written = projector.applied.cars_written
    result.update(
        events=total,
        events_per_s=round(total / result["seconds"]),
        twin_writes=written,
        events_per_write=round(total / written, 1),
        transactions=projector.transactions,
        seconds_per_twin=round(projector.sizer.seconds_per_twin, 4),
    )
    return result


def run_baseline(settings: Settings, total: int, poll: int) -> dict[str, Any]:
    """One replace-with-upsert per event, one ordered bulk per poll, commit after the write."""
    codec = telemetry_codec()
    collection = clients.mongo_database(settings)["twins_baseline"]
    consumer = clients.kafka_consumer(settings, f"{settings.groups.twin}-baseline", **FAST_GROUP)
    consumer.subscribe([settings.topics.telemetry])
    done = 0
    started = time.perf_counter()
    while done < total:
        messages = consumer.consume(num_messages=min(poll, total - done), timeout=1.0)
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
    return {
        "events": done,
        "seconds": round(seconds, 1),
        "events_per_s": round(done / seconds),
        "poll": poll,
    }


def caught_up(settings: Settings, ends: list[TopicPartition]) -> bool:
    """Whether the twin group has committed every partition up to its end (no group join)."""
    probe = clients.kafka_consumer(settings, settings.groups.twin)
    try:
        committed = probe.committed([TopicPartition(tp.topic, tp.partition) for tp in ends], 10)
    finally:
        probe.close()
    at = {(tp.topic, tp.partition): tp.offset for tp in committed}
    return all(at[(tp.topic, tp.partition)] >= tp.offset for tp in ends)


def topic_ends(settings: Settings) -> list[TopicPartition]:
    consumer = clients.kafka_consumer(settings, f"bench-ends-{uuid.uuid4().hex[:6]}")
    try:
        metadata = consumer.list_topics(settings.topics.telemetry, timeout=10)
        ends = []
        for partition in metadata.topics[settings.topics.telemetry].partitions:
            tp = TopicPartition(settings.topics.telemetry, partition)
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            ends.append(TopicPartition(tp.topic, partition, high))
        return ends
    finally:
        consumer.close()


def projector_rss(settings: Settings, env: dict[str, str], total: int) -> dict[str, Any]:
    """Peak RSS of a real `fleet twin run` (default settings) while it applies the topic."""
    child_env = (
        os.environ
        | env
        | {
            "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
            "FLEET_TOPICS_ANOMALIES": settings.topics.anomalies,
            "FLEET_GROUPS_TWIN": settings.groups.twin,
            "FLEET_MONGODB_DATABASE": settings.mongodb.database,
            "FLEET_KAFKA_EXTRA": json.dumps(FAST_GROUP),
            "FLEET_TWIN_BATCH_SIZE": str(settings.twin.batch_size),
            "FLEET_TWIN_TRANSACTIONS": json.dumps(settings.twin.transactions),
            "FLEET_TWIN_CACHE_MB": str(settings.twin.cache_mb),
            "FLEET_LOG_LEVEL": "WARNING",
        }
    )
    ends = topic_ends(settings)
    fleet = Path(sys.executable).with_name("fleet")
    process = subprocess.Popen([str(fleet), "twin", "run"], env=child_env)
    peak = 0
    started = time.perf_counter()
    last_check = 0.0
    try:
        ps = psutil.Process(process.pid)
        while True:
            peak = max(peak, ps.memory_info().rss)
            if process.poll() is not None:
                raise RuntimeError(f"fleet twin run exited early ({process.returncode})")
            now = time.perf_counter()
            if now - last_check > 2:
                last_check = now
                if caught_up(settings, ends):
                    break
            time.sleep(0.2)
        seconds = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(120)
    return {
        "peak_rss_mb": round(peak / 2**20, 1),
        "seconds": round(seconds, 1),
        "events_per_s": round(total / seconds),
        "exit_code": process.returncode,
    }


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE.parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(results: dict[str, Any]) -> str:
    base, proj = results["baseline"], results["projector"]
    lines = [
        f"# Twin projector benchmark ({results['date']}, commit {results['commit']})",
        "",
        f"`{results['command']}`",
        "",
        f"{results['cars']} cars x {results['readings']} readings = {proj['events']} events, "
        f"same topic, same SecantusDB, same run. Load average (1 min) before/after: "
        f"{results['load']['before']} / {results['load']['after']} on "
        f"{results['machine']['cpus']} cores. Indicative figures.",
        "",
        "| run | events | events/s | writes |",
        "| --- | ---: | ---: | --- |",
        f"| baseline: replace-upsert per event, ordered bulk per poll of {base['poll']} "
        f"| {base['events']} | {base['events_per_s']} | one per event |",
        f"| projector (`fleet twin run`, transactions={proj['transactions']}) | {proj['events']} "
        f"| {proj['events_per_s']} | {proj['twin_writes']} twin writes, "
        f"{proj['events_per_write']} events each |",
        f"| ratio | | **{results['ratio']}x** | goal >= 10x |",
        "",
        "The projector writes each car once per batch, so its advantage grows with the events a "
        "car has in a batch: a backlog is applied in batches as large as the limits allow "
        "(`twin.batch_size` events, as many cars as fit in `twin.batch_seconds`). The same "
        "projector on backlogs of other depths (same fleet, same baseline):",
        "",
        "| readings per car | events | events/s | events per twin write | ratio |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {d['readings']} | {d['events']} | {d['events_per_s']} | "
            f"{d['events_per_write']} | {d['ratio']}x |"
            for d in results.get("depths", [])
        ),
        "",
        f"Projector memory, {results['memory_events']} events per run (same for every fleet "
        "size), same settings, a real `fleet twin run` process; peak RSS without the twin cache "
        "(`twin.cache_mb = 0`) and with its default bound:",
        "",
        "| cars | events | peak RSS, no cache (MB) | events/s | peak RSS, default cache (MB) "
        "| events/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {m['cars']} | {m['events']} | {m['peak_rss_mb']} | {m['events_per_s']} | "
            f"{c['peak_rss_mb']} | {c['events_per_s']} |"
            for m, c in zip(results["memory"], results.get("memory_with_cache", []), strict=False)
        ),
    ]
    return "\n".join(lines) + "\n"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cars", type=int, default=10_000)
    parser.add_argument("--readings", type=int, default=40, help="readings per car")
    parser.add_argument("--batch", type=int, default=None, help="projector batch_size")
    parser.add_argument("--baseline-events", type=int, default=20_000)
    parser.add_argument("--baseline-poll", type=int, default=500, help="records per bulk")
    parser.add_argument(
        "--depths", default="5,20", help="other backlog depths (readings per car) to project"
    )
    parser.add_argument("--memory-cars", default="1000,10000,100000")
    parser.add_argument("--memory-events", type=int, default=100_000, help="events per run")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--running", action="store_true", help="use the stack FLEET_* names")
    parser.add_argument(
        "--transactions", action="store_true", help="projector: one transaction per chunk"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "twin.json")
    args = parser.parse_args()
    if args.quick:
        args.cars, args.readings, args.baseline_events, args.depths = 1000, 10, 2000, "2"
        args.memory_cars, args.memory_events = "100,1000", 2000
    return args


def main() -> None:
    args = arguments()

    results: dict[str, Any] = {
        "what": "twin projector vs one replace-with-upsert per event (the MongoDB Kafka sink "
        "connector's default write pattern), same data, same SecantusDB, same run",
        "command": shlex.join([".venv/bin/python", "bench/twin_projector.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "caveat": "indicative: 2 shared cores; other work may run on the machine (see load)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load": {"before": load()},
        "cars": args.cars,
        "readings": args.readings,
    }
    stack, env = (None, {}) if args.running else start_stack()
    try:
        base = Settings()
        twin: dict[str, Any] = {"transactions": args.transactions}
        if args.batch:
            twin["batch_size"] = args.batch
        base = base.model_copy(update={"twin": base.twin.model_copy(update=twin)})
        results["projector_settings"] = base.twin.model_dump(
            include={"batch_size", "batch_seconds", "write_chunk", "dedupe_window", "transactions"}
        )
        settings = isolated(base, "speed")
        print(f"producing {args.cars * args.readings} events for {args.cars} cars", flush=True)
        total = produce(settings, readings(args.cars, args.readings))
        print("baseline (one replace-with-upsert per event)...", flush=True)
        baseline = run_baseline(settings, min(total, args.baseline_events), args.baseline_poll)
        results["baseline"] = baseline | {"load_after": load()}
        print(f"  {baseline['events_per_s']} events/s", flush=True)
        print("projector...", flush=True)
        projector = run_projector(settings, total)
        results["projector"] = projector | {"load_after": load()}
        results["ratio"] = round(projector["events_per_s"] / baseline["events_per_s"], 1)
        print(f"  {projector['events_per_s']} events/s, {results['ratio']}x", flush=True)

        results["depths"] = []
        for depth in [int(n) for n in args.depths.split(",") if n]:
            deeper = isolated(base, f"depth{depth}")
            events = produce(deeper, readings(args.cars, depth))
            run = run_projector(deeper, events)
            ratio = round(run["events_per_s"] / baseline["events_per_s"], 1)
            results["depths"].append({"readings": depth, **run, "ratio": ratio})
            print(f"  {depth} readings per car: {run['events_per_s']} events/s, {ratio}x")

        results["memory_events"] = args.memory_events
        # The projector's own memory (cache off: what follows the batch), and with its default
        # twin cache (bounded by twin.cache_mb, so it grows with the fleet up to that bound).
        results["memory"], results["memory_with_cache"] = [], []
        for cars in [int(n) for n in args.memory_cars.split(",") if n]:
            for key, cache_mb in (("memory", 0), ("memory_with_cache", base.twin.cache_mb)):
                sized = isolated(base, f"mem{cars}c{cache_mb}")
                sized = sized.model_copy(
                    update={"twin": sized.twin.model_copy(update={"cache_mb": cache_mb})}
                )
                steps = max(1, args.memory_events // cars)
                events = produce(sized, readings(cars, steps))
                figures = projector_rss(sized, env, events)
                run = {"cars": cars, "events": events, "cache_mb": cache_mb, **figures}
                results[key].append(run | {"load": load()})
                print(f"  {cars} cars, cache {cache_mb} MB: {figures['peak_rss_mb']} MB")
        results["load"]["after"] = load()
    finally:
        if stack is not None:
            stack.down()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
