"""The twin projector in the live regime: a big fleet, each car reporting now and then, so a
batch touches each car once. CPU per reading of the projector and of the MongoDB-wire server,
and reading -> twin latency, at one or more rates, on a warm fleet.

    .venv/bin/python bench/twin_live.py                        # 100,000 cars, 1,000 and 2,000/s
    .venv/bin/python bench/twin_live.py --rates 2000 --seconds 30 --profile /tmp/twin.txt
    .venv/bin/python bench/twin_live.py --compare ../before     # another checkout first, same run

Only Kafka, the MongoDB-wire server and a real `fleet twin run` run: no MQTT, bridge or
scorer (bench/e2e.py runs the whole pipeline). Readings are produced straight to Kafka, in
Avro, cars in turn, event time = now. Latency is taken from the twin-change events the
projector publishes after each write (its `changed_at`), so it includes the write. With
`--profile`, py-spy samples the projector during the first rate and its top functions (own
time) are printed and written. Writes bench/results/twin_live.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.e2e import Changes, latencies, stack_server  # noqa: E402
from bench.twin_projector import caught_up, isolated, start_stack, topic_ends  # noqa: E402
from fleet import clients  # noqa: E402
from fleet.avro import telemetry_codec  # noqa: E402
from fleet.contract import SENSORS, WHEELS  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.stack.process import read_pidfile  # noqa: E402
from fleet.topics import create_topics, topic_specs  # noqa: E402
from fleet.waiting import wait_for  # noqa: E402

RESULTS = HERE / "results"


def row(car: int, step: int, at_ms: int) -> dict[str, Any]:
    record: dict[str, Any] = {"car_id": f"car{car:06d}", "event_time": at_ms, "seq": step}
    for i, name in enumerate(SENSORS):
        record[name] = float(i + (car + step) % 7)
    for w in WHEELS:
        record[f"tire_pressure_{w}"] = 30.0 + (car + step) % 5
    record["control_unit_firmware"] = 2000 if car % 25 else 1000
    return record


class Producer:
    """Cars in turn at ``rate`` readings/s (event time = now), remembering when each was sent."""

    def __init__(self, settings: Settings, cars: int) -> None:
        self.producer = clients.kafka_producer(settings, **{"linger.ms": 5})
        self.topic = settings.topics.telemetry
        self.codec = telemetry_codec()
        self.cars = cars
        self.sent: dict[tuple[str, int], float] = {}

    def step(self, step: int, rate: float | None, first: int = 0, count: int | None = None) -> None:
        """Cars ``first``..``first+count`` once each, at ``rate`` (None: as fast as possible)."""
        count = self.cars - first if count is None else count
        piece = 100
        started = time.time()
        for start in range(first, first + count, piece):
            if rate is not None:
                due = started + (start - first) / rate
                pause = due - time.time()
                if pause > 0:
                    time.sleep(pause)  # pacing a producer, not synchronization
            now_ms = int(time.time() * 1000)
            rows = [row(c, step, now_ms) for c in range(start, min(start + piece, first + count))]
            for record, value in zip(rows, self.codec.encode_many(rows), strict=True):
                while True:
                    try:
                        self.producer.produce(self.topic, key=record["car_id"], value=value)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                if rate is not None:
                    self.sent[(record["car_id"], step)] = time.time()
            self.producer.poll(0)
        assert self.producer.flush(60) == 0


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def server_process(stack: Any) -> psutil.Process:
    (mongodb,) = [s for s in stack.managed() if s.name == "mongodb"]
    record = read_pidfile(mongodb.pidfile)
    assert record is not None and record.process() is not None
    return record.process()


def top_functions(raw: Path, count: int = 25) -> list[tuple[str, float]]:
    """py-spy's raw (collapsed) stacks -> the functions with the most own samples, in %."""
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        n = int(samples)
        total += n
        own[stack.split(";")[-1]] += n
    return [(name, round(100 * n / total, 1)) for name, n in own.most_common(count)]


def run_variant(  # noqa: PLR0915 (one projector's scenario, start to finish)
    stack: Any, env: dict[str, str], args: argparse.Namespace, code: Path | None, profile: bool
) -> dict[str, Any]:
    """Warm a fresh fleet, then each rate, with the projector from ``code`` (a checkout;
    None: this one) on the shared stack."""
    settings = isolated(Settings(), "live")
    # Its own change-event topic too: the latencies are read from it.
    changes_topic = f"{settings.topics.telemetry}.changes"
    topics = settings.topics.model_copy(update={"twin_changes": changes_topic})
    settings = settings.model_copy(update={"topics": topics})
    create_topics(clients.kafka_admin(settings), topic_specs(settings))
    server = server_process(stack)
    producer = Producer(settings, args.cars)
    producer.step(0, None)  # every car once: the warm-up
    child_env = (
        os.environ
        | env
        | {
            "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
            "FLEET_TOPICS_ANOMALIES": settings.topics.anomalies,
            "FLEET_TOPICS_TWIN_CHANGES": settings.topics.twin_changes,
            "FLEET_GROUPS_TWIN": settings.groups.twin,
            "FLEET_MONGODB_DATABASE": settings.mongodb.database,
            "FLEET_LOG_LEVEL": "WARNING",
        }
    )
    if code is not None:
        child_env["PYTHONPATH"] = str(code.resolve())
    fleet = Path(sys.executable).with_name("fleet")
    projector = subprocess.Popen([str(fleet), "twin", "run"], env=child_env)
    runs: list[dict[str, Any]] = []
    try:
        ends = topic_ends(settings)
        warm = time.perf_counter()
        wait_for(lambda: caught_up(settings, ends), 900, "the warm-up applied", interval=2)
        warm_s = time.perf_counter() - warm
        print(f"warm: {args.cars} twins in {warm_s:.0f} s", flush=True)
        proc = psutil.Process(projector.pid)
        step = 0
        for n, rate in enumerate(int(r) for r in args.rates.split(",")):
            changes = Changes(settings)
            changes.start()
            count = int(rate * args.seconds)
            cpu_before = cpu_seconds(proc), cpu_seconds(server)
            started = time.time()
            spy = None
            if profile and n == 0:
                spy = subprocess.Popen(
                    [str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                     str(projector.pid), "--format", "raw", "--rate", "50",
                     "--output", str(args.profile), "--duration", str(int(args.seconds))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            producer.sent.clear()
            published = 0
            while published < count:  # whole passes over the fleet, at the rate
                step += 1
                piece = min(args.cars, count - published)
                producer.step(step, rate, 0, piece)
                published += piece
            publish_end = time.time()
            ends = topic_ends(settings)
            wait_for(lambda e=ends: caught_up(settings, e), 600, "the rate applied", interval=1)
            done = time.time()
            cpu_after = cpu_seconds(proc), cpu_seconds(server)
            if spy is not None:
                spy.wait(args.seconds + 60)
            seen = changes.rows

            def every_change(rows: list[Any] = seen, wanted: int = count) -> bool:
                return len(latencies(rows, producer.sent, 1)) >= wanted

            wait_for(every_change, 60, "every change event", interval=1)
            changes.stop.set()
            changes.join(30)
            lat = latencies(changes.rows, producer.sent, 1)
            runs.append(
                {
                    "rate_target": rate,
                    "rate_offered": round(count / (publish_end - started)),
                    "readings": count,
                    "caught_up_after_publish_s": round(done - publish_end, 1),
                    "reading_to_twin_p50_s": round(float(np.percentile(lat, 50)), 3),
                    "reading_to_twin_p99_s": round(float(np.percentile(lat, 99)), 3),
                    "projector_cpu_us_per_reading": round(
                        (cpu_after[0] - cpu_before[0]) / count * 1e6, 1
                    ),
                    "server_cpu_us_per_reading": round(
                        (cpu_after[1] - cpu_before[1]) / count * 1e6, 1
                    ),
                    "load_1m": round(os.getloadavg()[0], 1),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    finally:
        projector.terminate()
        projector.wait(60)
    return {"warm_up_s": round(warm_s, 1), "runs": runs}


def git_describe(code: Path | None) -> str:
    where = code or HERE.parent
    found = subprocess.run(
        ["git", "-C", str(where), "log", "-1", "--format=%h %s"],
        check=False,
        capture_output=True,
        text=True,
    )
    return found.stdout.strip()[:72] or str(where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cars", type=int, default=100_000)
    parser.add_argument("--rates", default="1000,2000", help="readings/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="per rate")
    parser.add_argument("--profile", type=Path, help="py-spy this checkout's projector")
    parser.add_argument(
        "--compare",
        type=Path,
        help="another checkout (e.g. a worktree of an older commit): its projector runs the "
        "same scenario first, on the same stack, for a before/after in one run",
    )
    parser.add_argument("--label", default="", help="keep the run under this name in the json")
    args = parser.parse_args()
    stack, env = start_stack()
    try:
        variants: list[dict[str, Any]] = []
        for code in ([args.compare] if args.compare else []) + [None]:
            described = git_describe(code)  # before: the checkout may move during the run
            figures = run_variant(stack, env, args, code, profile=args.profile and code is None)
            variants.append({"code": described, **figures})
        results = {
            "label": args.label or "latest",
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "server": stack_server(stack),
            "cars": args.cars,
            "variants": variants,
        }
        if args.profile is not None and args.profile.exists():
            results["profile_top"] = top_functions(args.profile)
            for name, share in results["profile_top"]:
                print(f"{share:5.1f}%  {name}")
        write(results)
    finally:
        stack.down()


def write(results: dict[str, Any]) -> None:
    path = RESULTS / "twin_live.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    kept[results["label"]] = results
    path.write_text(json.dumps(kept, indent=1) + "\n")
    lines = ["# The twin projector, live regime (one reading per car per batch)", ""]
    for label, r in kept.items():
        lines += [
            f"## {label}: {r['server']}, {r['cars']:,} cars, {r['when']}",
            "",
            "| projector code | readings/s | offered | caught up after publish (s) "
            "| reading -> twin p50 / p99 (s) | projector CPU µs/reading "
            "| server CPU µs/reading | load |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for variant in r.get("variants") or [{"code": "", "runs": r.get("runs", [])}]:
            for run in variant["runs"]:
                lines.append(
                    f"| {variant['code']} | {run['rate_target']:,} | {run['rate_offered']:,} | "
                    f"{run['caught_up_after_publish_s']} | {run['reading_to_twin_p50_s']} / "
                    f"{run['reading_to_twin_p99_s']} | {run['projector_cpu_us_per_reading']} | "
                    f"{run['server_cpu_us_per_reading']} | {run['load_1m']} |"
                )
        lines.append("")
    (RESULTS / "twin_live.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
