"""The whole platform at the original demo's load, end to end, on this machine.

    .venv/bin/python bench/e2e.py [--cars 100000] [--rates 1000,2000,5000,10000]
        [--seconds 120] [--bridges 2] [--publishers 2] [--label NAME]

Starts its own local stack in a temporary folder (the default MongoDB-wire server, or the one
``FLEET_MONGODB_SERVER`` picks), trains and promotes a small model, and runs the platform as
`fleet` subprocesses with their default settings: the bridge (``--bridges`` processes), the
twin projector, the history projection, the lake archiver and the scorer. Then a simulated
fleet of ``--cars`` cars publishes over MQTT (QoS 1, the publisher processes of
``bench/ingest_bench.py``) at each rate of ``--rates`` in turn, for ``--seconds`` each; the
cars' reading interval is what gives that rate (100,000 cars at 10,000 readings/s: one
reading every 10 s, the original demo's load).

Per rate it reports: offered and sustained readings/s; PUBACKed readings missing from Kafka;
each consumer group's lag, sampled every 5 s (it must not grow); reading -> twin and reading
-> score-on-twin latency (publish call -> the twin-change event of the write that put that
reading, or a newer one, on its twin); CPU µs per reading of every process; the twin size.
Writes ``bench/results/e2e.json`` and ``bench/results/e2e.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bson  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition  # noqa: E402

from bench._ml_common import promote_small_model  # noqa: E402
from bench.ingest_bench import cpu_seconds  # noqa: E402
from fleet import clients  # noqa: E402
from fleet.avro import twin_change_codec  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.stack import Stack  # noqa: E402
from fleet.stack.ports import private_stack_environment  # noqa: E402
from fleet.stack.process import read_pidfile  # noqa: E402
from fleet.topics import create_topics, topic_specs  # noqa: E402
from fleet.waiting import wait_for  # noqa: E402
from ingest.outputs import MqttSink  # noqa: E402
from ingest.simulator import FleetSimulator, SimulationConfig  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FLEET = str(Path(sys.executable).parent / "fleet")
INGEST_BENCH = str(ROOT / "bench" / "ingest_bench.py")
SEED = 2  # the publishers' simulator seed (bench/ingest_bench.py)
LAG_EVERY_S = 5.0
SERVICES = {
    "projector": ["twin", "run"],
    "history": ["history", "run"],
    "archiver": ["lake", "run"],
    "scorer": ["ml", "score"],
}


def isolated(settings: Settings) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(
        update={
            name: f"{getattr(settings.topics, name)}.e2e.{suffix}"
            for name in ("telemetry", "anomalies", "dead_letters", "models", "twin_changes")
        }
    )
    groups = settings.groups.model_copy(
        update={name: f"{value}-e2e-{suffix}" for name, value in settings.groups}
    )
    mongodb = settings.mongodb.model_copy(update={"database": f"e2e_{suffix}"})
    ml = settings.ml.model_copy(update={"registry_prefix": f"e2e-models-{suffix}"})
    out = settings.model_copy(
        update={"topics": topics, "groups": groups, "mongodb": mongodb, "ml": ml}
    )
    create_topics(clients.kafka_admin(out), topic_specs(out))
    return out


def service_env(settings: Settings) -> dict[str, str]:
    topics, groups = settings.topics, settings.groups
    return dict(os.environ) | {
        "FLEET_TOPICS_TELEMETRY": topics.telemetry,
        "FLEET_TOPICS_ANOMALIES": topics.anomalies,
        "FLEET_TOPICS_DEAD_LETTERS": topics.dead_letters,
        "FLEET_TOPICS_MODELS": topics.models,
        "FLEET_TOPICS_TWIN_CHANGES": topics.twin_changes,
        **{f"FLEET_GROUPS_{name.upper()}": value for name, value in groups},
        "FLEET_MONGODB_DATABASE": settings.mongodb.database,
        "FLEET_ML_REGISTRY_PREFIX": settings.ml.registry_prefix,
        "FLEET_INGEST_BRIDGE_SESSION_EXPIRY": "300",
        "FLEET_LOG_FORMAT": "json",
    }


class Changes(threading.Thread):
    """Twin-change events as they come: (car, reading seq, score seq, when written)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.consumer = clients.kafka_consumer(settings, f"e2e-changes-{uuid.uuid4().hex[:8]}")
        self.consumer.subscribe([settings.topics.twin_changes])
        self.codec = twin_change_codec()
        self.rows: list[tuple[str, int, int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for message in self.consumer.consume(10_000, 0.2):
                if message.error() is not None:
                    continue
                event = self.codec.decode(message.value() or b"")
                values = json.loads(event["values"])
                reading = (values.get("last_reading") or {}).get("seq", -1)
                score = (values.get("anomaly") or {}).get("seq", -1)
                self.rows.append((event["car_id"], reading, score, event["changed_at"] / 1000))
        self.consumer.close()


def latencies(
    rows: list[tuple[str, int, int, float]], sent: dict[tuple[str, int], float], column: int
) -> np.ndarray:
    """Publish -> the first twin write showing that reading (or a newer one) in ``column``."""
    latest: dict[str, int] = {}
    out: list[float] = []
    for row in rows:
        car, seq, at = row[0], row[column], row[3]
        before = latest.get(car, -1)
        if seq <= before:
            continue
        for s in range(before + 1, seq + 1):
            published = sent.get((car, s))
            if published is not None:
                out.append(at - published)
        latest[car] = seq
    return np.asarray(out)


class LagSampler(threading.Thread):
    """Each consumer group's lag (messages behind the high watermarks) every few seconds."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.admin = clients.kafka_admin(settings)
        self.probe = clients.kafka_consumer(settings, f"e2e-lag-{uuid.uuid4().hex[:8]}")
        topics = settings.topics
        self.reads = {
            settings.groups.twin: [topics.telemetry, topics.anomalies],
            settings.groups.history: [topics.telemetry, topics.anomalies],
            settings.groups.lake: [topics.telemetry, topics.anomalies],
            settings.groups.scorer: [topics.telemetry],
        }
        self.names = {
            settings.groups.twin: "projector",
            settings.groups.history: "history",
            settings.groups.lake: "archiver",
            settings.groups.scorer: "scorer",
        }
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def partitions(self, topic: str) -> int:
        topics = self.settings.topics
        return (
            topics.anomalies_partitions
            if topic == topics.anomalies
            else topics.telemetry_partitions
        )

    def sample(self) -> dict[str, Any]:
        high: dict[tuple[str, int], int] = {}
        for topic in {t for ts in self.reads.values() for t in ts}:
            for p in range(self.partitions(topic)):
                high[(topic, p)] = self.probe.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
        lag: dict[str, int] = {"t": time.time()}  # type: ignore[dict-item]
        for group, topics in self.reads.items():
            wanted = [TopicPartition(t, p) for t in topics for p in range(self.partitions(t))]
            request = [ConsumerGroupTopicPartitions(group, wanted)]
            committed = self.admin.list_consumer_group_offsets(request)[group].result()
            behind = 0
            for tp in committed.topic_partitions:
                done = tp.offset if tp.offset >= 0 else 0
                behind += max(0, high[(tp.topic, tp.partition)] - done)
            lag[self.names[group]] = behind
        return lag

    def run(self) -> None:
        while not self.stop.wait(LAG_EVERY_S):
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # a slow admin answer under load: skip a sample
                print(f"lag sample skipped: {exc}", file=sys.stderr)
        self.probe.close()


def processes(
    settings: Settings, running: dict[str, subprocess.Popen[bytes]]
) -> dict[str, list[psutil.Process]]:
    out: dict[str, list[psutil.Process]] = {}
    for name, proc in running.items():
        root = psutil.Process(proc.pid)
        out[name] = [root, *root.children(recursive=True)]
    for service in Stack(settings, only=["mosquitto", "kafka", "mongodb"]).managed():
        record = read_pidfile(service.pidfile)
        process = record.process() if record else None
        if process is not None:
            out[service.name] = [process, *process.children(recursive=True)]
    return out


def telemetry_in_kafka(settings: Settings, probe: Any) -> int:
    topic = settings.topics.telemetry
    return sum(
        probe.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
        for p in range(settings.topics.telemetry_partitions)
    )


def run_rate(  # noqa: PLR0915 (one phase of the scenario, start to finish)
    settings: Settings,
    env: dict[str, str],
    running: dict[str, subprocess.Popen[bytes]],
    *,
    cars: int,
    rate: int,
    seconds: float,
    first_step: int,
    publishers: int,
    work: Path,
) -> tuple[dict[str, Any], int]:
    interval_ms = int(cars / rate * 1000)
    steps = max(1, round(seconds * 1000 / interval_ms))
    changes = Changes(settings)
    changes.start()
    lag = LagSampler(settings)
    lag.start()
    probe = clients.kafka_consumer(settings, f"e2e-probe-{uuid.uuid4().hex[:8]}")
    in_kafka_before = telemetry_in_kafka(settings, probe)
    watched = processes(settings, running)
    cpu_before = {name: cpu_seconds(procs) for name, procs in watched.items()}
    load_before = os.getloadavg()
    started = time.time() + 3
    bounds = np.linspace(0, cars, publishers + 1).astype(int)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                INGEST_BENCH,
                "--worker",
                f"--cars={cars}",
                f"--slice={bounds[n]},{bounds[n + 1]}",
                f"--steps={steps}",
                f"--start-at={started}",
                f"--interval-ms={interval_ms}",
                f"--first-step={first_step}",
                f"--out={work / f'publisher-{rate}-{n}.npz'}",
            ],
            env=env,
        )
        for n in range(publishers)
    ]
    for worker in workers:
        if worker.wait() != 0:
            raise RuntimeError(f"a publisher failed (exit {worker.returncode})")
    parts = [np.load(work / f"publisher-{rate}-{n}.npz") for n in range(publishers)]
    publish_end = max(float(part["publish_end"]) for part in parts)
    names = np.array(FleetSimulator(SimulationConfig(cars=cars, seed=SEED)).car_ids)
    sent: dict[tuple[str, int], float] = {}
    pubacked = 0
    for part in parts:
        keys = zip(names[part["car"]].tolist(), part["seq"].tolist(), strict=True)
        sent.update(zip(keys, part["sent_at"].tolist(), strict=True))
        pubacked += int((part["status"] == 1).sum())
    last_seq = first_step + steps  # the publishers' steps are first_step+1 .. first_step+steps
    # Wait (bounded) for the last step's readings and scores on every twin, then measure.

    def caught_up() -> bool:
        latest_reading: dict[str, int] = {}
        latest_score: dict[str, int] = {}
        for car, reading, score, _at in changes.rows:
            latest_reading[car] = max(latest_reading.get(car, -1), reading)
            latest_score[car] = max(latest_score.get(car, -1), score)
        return (
            sum(1 for s in latest_reading.values() if s >= last_seq) >= cars
            and sum(1 for s in latest_score.values() if s >= last_seq) >= cars
        )

    drained = True
    try:
        wait_for(caught_up, max(180.0, seconds * 2), "the last step on every twin", interval=2.0)
    except TimeoutError:
        drained = False
    done = time.time()
    cpu = {name: cpu_seconds(procs) - cpu_before[name] for name, procs in watched.items()}
    cpu["publishers"] = sum(float(part["cpu_s"]) for part in parts)
    in_kafka = telemetry_in_kafka(settings, probe) - in_kafka_before
    changes.stop.set()
    lag.stop.set()
    changes.join(30)
    lag.join(30)
    probe.close()
    total = len(sent)
    to_twin = latencies(changes.rows, sent, 1)
    to_score = latencies(changes.rows, sent, 2)

    def pct(values: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(values, q)), 2) if len(values) else None

    twins = clients.mongo_database(settings)[settings.twin.collection]
    sizes = [len(bson.encode(t)) for t in twins.aggregate([{"$sample": {"size": 200}}])]
    lag_series = [
        {k: (round(v - started, 1) if k == "t" else v) for k, v in s.items()} for s in lag.samples
    ]
    figures = {
        "rate_offered_readings_per_s": round(total / max(publish_end - started, 1e-9)),
        "rate_target_readings_per_s": rate,
        "cars": cars,
        "reading_interval_s": interval_ms / 1000,
        "seconds": round(publish_end - started, 1),
        "published": total,
        "pubacked": pubacked,
        "in_kafka": in_kafka,
        "lost_pubacked": max(0, pubacked - in_kafka),
        "every_twin_caught_up": drained,
        "caught_up_after_publish_end_s": round(done - publish_end, 1),
        # Readings that reached their twins, over the time from the first publish to the end
        # of the wait: equal to the offered rate only when the platform keeps up.
        "sustained_readings_per_s": round(len(to_twin) / max(done - started, 1e-9)),
        "reading_to_twin_p50_s": pct(to_twin, 50),
        "reading_to_twin_p99_s": pct(to_twin, 99),
        "reading_to_twin_counted": len(to_twin),
        "reading_to_score_on_twin_p50_s": pct(to_score, 50),
        "reading_to_score_on_twin_p99_s": pct(to_score, 99),
        "lag_max": {
            name: max((s.get(name, 0) for s in lag.samples), default=None)
            for name in ("projector", "history", "archiver", "scorer")
        },
        "lag_series": lag_series,
        "lag_growth_per_s": lag_growth(lag_series, publish_end - started),
        **{f"cpu_us_per_reading_{name}": round(v / total * 1e6, 1) for name, v in cpu.items()},
        "cpu_us_per_reading_total": round(sum(cpu.values()) / total * 1e6, 1),
        "twin_bytes_mean": round(float(np.mean(sizes))) if sizes else None,
        "twin_bytes_max": max(sizes) if sizes else None,
        "load_average_1m_before_after": f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f}",
    }
    return figures, last_seq


GROUPS = ("projector", "history", "archiver", "scorer")


def lag_growth(series: list[dict[str, float]], until: float) -> dict[str, float | None]:
    """How fast each consumer group's lag grew while the fleet published, in messages/s (the
    least-squares slope of its samples): about 0 for a stage that keeps up, the offered rate
    less what it sustains for one that does not (the projector and the archiver read readings
    and scores: two messages a reading). The archiver's lag is a saw-tooth by design
    (it commits when a segment is uploaded, lake.flush_seconds), so judge it over a long run."""
    kept = [s for s in series if s["t"] <= until]
    if len(kept) < 3:
        return dict.fromkeys(GROUPS)
    t = np.array([s["t"] for s in kept])
    return {
        name: round(float(np.polyfit(t, [s.get(name, 0) for s in kept], 1)[0]), 1)
        for name in GROUPS
    }


def growth(phase: dict[str, Any]) -> dict[str, float | None]:
    """A phase's lag growth (computed afresh for runs from before it was recorded)."""
    kept = phase.get("lag_growth_per_s")
    return kept if kept else lag_growth(phase["lag_series"], phase["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cars", type=int, default=100_000)
    parser.add_argument(
        "--rates",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1_000, 2_000, 5_000, 10_000],
        help="readings/s, one phase each",
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="per phase")
    parser.add_argument("--bridges", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--label", default="", help="keep the run under this name in e2e.json")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    env = dict(os.environ) | private_stack_environment(home)
    os.environ.update(env)
    stack = Stack(Settings())
    stack.up()
    running: dict[str, subprocess.Popen[bytes]] = {}
    logs = home / "logs"
    logs.mkdir()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mongodb_server": stack_server(stack),
        "machine": f"{os.cpu_count()} cores",
        "bridges": args.bridges,
        "publishers": args.publishers,
        "score_wait_seconds": Settings().twin.score_wait_seconds,
        "rates": {},
    }
    try:
        settings = isolated(Settings())
        env = service_env(settings)
        promote_small_model(settings)
        running["bridges"] = subprocess.Popen(
            [
                FLEET,
                "bridge",
                f"--processes={args.bridges}",
                f"--client-id=e2e-{uuid.uuid4().hex[:6]}",
            ],
            env=env,
            stdout=(logs / "bridge.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for name, command in SERVICES.items():
            running[name] = subprocess.Popen(
                [FLEET, *command],
                env=env,
                stdout=(logs / f"{name}.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        wait_for(
            lambda: (logs / "bridge.log").read_text().count("subscribed") >= args.bridges,
            120,
            "the bridges to subscribe",
        )
        wait_for(
            lambda: '"model loaded"' in (logs / "scorer.log").read_text(), 300, "the scorer's model"
        )
        # Warm up: step 0 of every car, through the whole pipeline, before anything is counted.
        simulator = FleetSimulator(SimulationConfig(cars=args.cars, seed=SEED))
        warm = simulator.step()
        sink = MqttSink(settings, qos=1, connections=2)
        sink.send(warm, 0, args.cars)
        sink.close(300)
        twins = clients.mongo_database(settings)[settings.twin.collection]
        # Every twin with its warm-up reading and score, so no phase starts behind a backlog.
        wait_for(
            lambda: twins.count_documents({"anomaly.seq": {"$gte": 0}}) >= args.cars,
            900,
            "a scored twin per car",
            interval=5,
        )
        step = 0
        for rate in args.rates:
            print(f"rate {rate:,} readings/s ...", file=sys.stderr)
            figures, step = run_rate(
                settings,
                env,
                running,
                cars=args.cars,
                rate=rate,
                seconds=args.seconds,
                first_step=step,
                publishers=args.publishers,
                work=home,
            )
            results["rates"][str(rate)] = figures
            print(json.dumps({k: v for k, v in figures.items() if k != "lag_series"}, indent=1))
            for name, proc in running.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; logs in {logs}")
    finally:
        for proc in running.values():
            proc.terminate()
        for proc in running.values():
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
        stack.down()
    write_results(results, args.label)


def stack_server(stack: Stack) -> str:
    """Which MongoDB-wire server the stack runs (its program name)."""
    for service in stack.managed():
        if service.name == "mongodb":
            return Path(service.command()[0]).name
    return "external"


COLUMNS = {
    "readings/s offered": lambda f: f"{f['rate_offered_readings_per_s']:,}",
    "sustained": lambda f: f"{f['sustained_readings_per_s']:,}",
    "lost": lambda f: str(f["lost_pubacked"]),
    "twins caught up (s after the last publish)": lambda f: (
        f"yes ({f['caught_up_after_publish_end_s']})"
        if f["every_twin_caught_up"]
        else f"no ({f['caught_up_after_publish_end_s']})"
    ),
    "reading -> twin p50 / p99 (s)": lambda f: (
        f"{f['reading_to_twin_p50_s']} / {f['reading_to_twin_p99_s']}"
    ),
    "reading -> score on twin p50 / p99 (s)": lambda f: (
        f"{f['reading_to_score_on_twin_p50_s']} / {f['reading_to_score_on_twin_p99_s']}"
    ),
    "max lag: projector / history / archiver / scorer": lambda f: " / ".join(
        str(f["lag_max"][n]) for n in GROUPS
    ),
    "lag growth, messages/s while publishing: projector / history / archiver / scorer": lambda f: (
        " / ".join(str(growth(f)[n]) for n in GROUPS)
    ),
    "CPU µs per reading": lambda f: str(f["cpu_us_per_reading_total"]),
    "twin bytes mean / max": lambda f: f"{f['twin_bytes_mean']} / {f['twin_bytes_max']}",
    "load before / after": lambda f: f["load_average_1m_before_after"],
}


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def write_results(results: dict[str, Any], label: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "e2e.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[label or results["mongodb_server"]] = results
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")
    render(data)


def render(data: dict[str, Any]) -> None:
    """e2e.md and the lag plots from every run kept in e2e.json."""
    lines = ["# End to end at the original demo's load", ""]
    for name, run in data.items():
        phases = list(run["rates"].values())
        lines += [f"## {name}: {run['mongodb_server']}, {run['date']}", ""]
        if "score_wait_seconds" in run:
            lines += [f"Projector `twin.score_wait_seconds`: {run['score_wait_seconds']}.", ""]
        lines += table(list(COLUMNS), [[cell(f) for cell in COLUMNS.values()] for f in phases])
        processes = sorted(
            {
                key.removeprefix("cpu_us_per_reading_")
                for f in phases
                for key in f
                if key.startswith("cpu_us_per_reading_") and key != "cpu_us_per_reading_total"
            }
        )
        lines += ["", "CPU µs per reading, by process:", ""]
        lines += table(
            ["readings/s", *processes],
            [
                [str(f["rate_target_readings_per_s"])]
                + [str(f.get(f"cpu_us_per_reading_{p}", "")) for p in processes]
                for f in phases
            ],
        )
        picture = plot_lag(name, run)
        lines += ["", f"Consumer lag over time: ![lag]({picture.name})", ""]
    (RESULTS / "e2e.md").write_text("\n".join(lines) + "\n")


def plot_lag(name: str, run: dict[str, Any]) -> Path:
    """Each consumer group's lag over time, a panel per rate, as a PNG beside e2e.md."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = list(run["rates"].values())
    width = max(4.5 * len(phases), 7.0)  # room for the title over a single panel
    figure, axes = plt.subplots(1, len(phases), figsize=(width, 3.2), squeeze=False)
    for axis, phase in zip(axes[0], phases, strict=True):
        series = phase["lag_series"]
        for group in GROUPS:
            axis.plot([s["t"] for s in series], [s.get(group, 0) for s in series], label=group)
        axis.axvline(phase["seconds"], color="grey", linestyle=":", linewidth=1)
        axis.set_title(f"{phase['rate_target_readings_per_s']:,} readings/s offered")
        axis.set_xlabel("s since the first publish (dotted: the last)")
    axes[0][0].set_ylabel("lag (messages)")
    axes[0][0].legend(fontsize="small")
    figure.suptitle(f"{name}: {run['mongodb_server']}, {run['date']}")
    figure.tight_layout()
    slug = "".join(c if c.isalnum() or c in "-." else "-" for c in name).strip("-")
    path = RESULTS / f"e2e-lag-{slug}.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
