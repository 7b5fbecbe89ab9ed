"""End-to-end latency: a reading appended to Kafka -> its anomaly score on the car's twin.

    .venv/bin/python bench/ml_latency.py [--rate 10000] [--cars 1000] [--seconds 30]

Starts its own Kafka + GCS + MongoDB-wire server (or uses the stack FLEET_* names), promotes a
small model, and runs `fleet ml score` and `fleet twin run` as subprocesses with their default
settings. A paced producer writes one step of the simulated fleet (one reading per car) every
``cars / rate`` seconds. A reading's latency is the time from its produce call to the
twin-change event of the write that put its score, or a newer one, on its car's twin (the
projector folds several readings of a car into one write, so an older score is applied and
superseded in the same write). The first ``--warmup`` seconds are not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench._ml_common import RESULTS, promote_small_model, stack, write_results
from fleet import clients
from fleet.avro import twin_change_codec
from fleet.settings import Settings
from fleet.waiting import DeadlineExceeded, wait_for
from ingest.fast_avro import BatchEncoder
from ingest.simulator import FleetSimulator, SimulationConfig

POLL_INTERVAL = 0.1


def service_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
        "FLEET_TOPICS_ANOMALIES": settings.topics.anomalies,
        "FLEET_TOPICS_MODELS": settings.topics.models,
        "FLEET_GROUPS_SCORER": settings.groups.scorer,
        "FLEET_GROUPS_TWIN": settings.groups.twin,
        "FLEET_ML_REGISTRY_PREFIX": settings.ml.registry_prefix,
        "FLEET_MONGODB_DATABASE": settings.mongodb.database,
        "FLEET_LOG_LEVEL": os.environ.get("FLEET_LOG_LEVEL", "INFO"),
    }


class ChangeWatcher(threading.Thread):
    """Reads the projector's twin-change events: which score seq each twin shows, and when.

    A change event is made right after the MongoDB write of its twin returned (`changed_at`),
    so it tells when a score reached the twin without polling MongoDB (polling 1,000 twins
    every 100 ms costs this server more than the projector's writes do)."""

    def __init__(self, settings: Settings, produced: dict[int, float]) -> None:
        super().__init__(daemon=True)
        self.consumer = clients.kafka_consumer(settings, f"bench-latency-{uuid.uuid4().hex[:8]}")
        self.consumer.subscribe([settings.topics.twin_changes])
        self.codec = twin_change_codec()
        self.produced = produced
        self.latest: dict[str, int] = {}
        self.latency: dict[int, list[float]] = {}  # seq -> latencies of that step's readings
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for message in self.consumer.consume(10_000, POLL_INTERVAL):
                    if message.error() is None:
                        self._apply(self.codec.decode(message.value() or b""))
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.consumer.close()

    def _apply(self, event: dict[str, Any]) -> None:
        if "anomaly" not in event["paths"]:
            return
        anomaly = json.loads(event["values"])["anomaly"]
        if anomaly is None:
            return
        car, seq, seen = event["car_id"], int(anomaly["seq"]), event["changed_at"] / 1000.0
        before = self.latest.get(car, -1)
        for s in range(before + 1, seq + 1):
            self.latency.setdefault(s, []).append(seen - self.produced[s])
        self.latest[car] = max(before, seq)


def score_latencies(settings: Settings, produced: dict[int, float], skip: int) -> np.ndarray:
    """Reading produced -> its score produced by the scorer (the anomaly event's CreateTime),
    for every 10th anomaly event: the scorer's share of the end-to-end latency."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from fleet.avro import anomaly_codec

    topic, count = settings.topics.anomalies, settings.topics.anomalies_partitions
    consumer = clients.kafka_consumer(settings, f"bench-latency-{uuid.uuid4().hex[:8]}")
    codec = anomaly_codec()
    highs = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1] for p in range(count)
    }
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(count)])
    out: list[float] = []
    done = {p for p, h in highs.items() if h == 0}
    deadline = time.monotonic() + 300
    while len(done) < count and time.monotonic() < deadline:
        for m in consumer.consume(10_000, 1.0):
            if m.error() is not None:
                continue
            offset = int(m.offset() or 0)
            if offset + 1 >= highs[int(m.partition() or 0)]:
                done.add(int(m.partition() or 0))
            if offset % 10 == 0:
                seq = codec.decode(m.value() or b"")["seq"]
                if seq > skip:
                    out.append(m.timestamp()[1] / 1000.0 - produced[seq])
    consumer.close()
    return np.asarray(out)


def main() -> None:  # noqa: PLR0915
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=10_000, help="readings per second")
    parser.add_argument("--cars", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument(
        "--label", default="", help="keep the figures as latency_<label> (other fleet sizes)"
    )
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait at the end")
    args = parser.parse_args()
    interval = args.cars / args.rate
    steps = int((args.warmup + args.seconds) / interval)

    with stack(("kafka", "gcs", "mongodb")) as base:
        mongodb = base.mongodb.model_copy(update={"database": f"bench_{uuid.uuid4().hex[:8]}"})
        settings = base.model_copy(update={"mongodb": mongodb})
        promote_small_model(settings)

        env = service_env(settings)
        fleet = str(Path(sys.executable).parent / "fleet")
        logs = RESULTS.parent / ".ml-latency-logs"
        logs.mkdir(exist_ok=True)
        procs = [
            subprocess.Popen(
                [fleet, *cmd],
                env=env,
                stdout=(logs / f"{cmd[0]}.log").open("w"),
                stderr=subprocess.STDOUT,
            )
            for cmd in (["ml", "score"], ["twin", "run"])
        ]
        produced: dict[int, float] = {}
        watcher = ChangeWatcher(settings, produced)
        simulator = FleetSimulator(
            SimulationConfig(cars=args.cars, seed=5, profile="seed", failure_rate=0.5)
        )
        encoder = BatchEncoder()
        producer = clients.kafka_producer(settings)
        topic = settings.topics.telemetry
        load_before = os.getloadavg()
        try:
            # Warm both services up with one step, so start-up (TensorFlow import, group joins)
            # is not counted as latency.
            first = next(iter(simulator.run(1)))
            produced[first.seq] = time.time()
            for car, value in zip(first.car_ids, encoder.encode(first), strict=True):
                producer.produce(topic, value, car.encode())
            producer.flush(30)
            watcher.start()
            wait_for(lambda: len(watcher.latest) == args.cars, 300, "the first scores on twins")
            start = time.monotonic()
            lag = 0.0
            for k, batch in enumerate(simulator.run(steps)):
                due = start + k * interval
                lag = max(lag, time.monotonic() - due)
                time.sleep(max(0.0, due - time.monotonic()))  # pacing the load, not a wait
                payloads = encoder.encode(batch)
                produced[batch.seq] = time.time()
                for car, value in zip(batch.car_ids, payloads, strict=True):
                    while True:
                        try:
                            producer.produce(topic, value, car.encode())
                            break
                        except BufferError:
                            producer.poll(0.01)
                producer.poll(0)
            producer.flush(60)
            published_seconds = time.monotonic() - start
            last = max(produced)

            def caught_up() -> bool:
                if watcher.error is not None:
                    raise SystemExit(f"watcher failed: {watcher.error!r}")
                behind = [s for s in watcher.latest.values() if s < last]
                print(f"twins behind the last step: {len(behind)}", file=sys.stderr)
                return not behind

            # Readings still without a score on their twin then are reported as missing.
            with contextlib.suppress(DeadlineExceeded):
                wait_for(caught_up, args.drain, "the last readings' scores on the twins", 2.0)
        finally:
            watcher.stop.set()
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        load_after = os.getloadavg()
        scored_latency = score_latencies(settings, produced, int(args.warmup / interval) + 1)

    skip = int(args.warmup / interval) + 1  # the warm-up step has seq 0
    counted = np.array([v for s, vs in watcher.latency.items() if s > skip for v in vs])
    expected = (steps - skip) * args.cars  # seqs skip+1 .. steps
    missing = expected - len(counted)
    if missing:  # never seen within the drain time: count them as infinitely late
        counted = np.r_[counted, np.full(missing, np.inf)]
    figures: dict[str, Any] = {
        "rate_target_readings_per_s": args.rate,
        "rate_achieved_readings_per_s": steps * args.cars / published_seconds,
        "producer_max_behind_schedule_s": lag,
        "cars": args.cars,
        "readings_counted": len(counted),
        "readings_without_score_on_twin_after_drain": missing,
        "p50_s": float(np.percentile(counted, 50, method="nearest")),
        "p90_s": float(np.percentile(counted, 90, method="nearest")),
        "p99_s": float(np.percentile(counted, 99, method="nearest")),
        "max_s": float(counted.max()),
        "seconds_measured": args.seconds,
        "goal_p99_s": 2.0,
        "scorer_share_reading_to_score_produced": {
            "sampled": len(scored_latency),
            "p50_s": float(np.percentile(scored_latency, 50, method="nearest"))
            if len(scored_latency)
            else None,
            "p99_s": float(np.percentile(scored_latency, 99, method="nearest"))
            if len(scored_latency)
            else None,
        },
        "load_average_1_5_15_before": load_before,
        "load_average_1_5_15_after": load_after,
        "note": "produce call -> the twin-change event of the write that put that reading's score "
        "or a newer one on its twin (its changed_at, taken when the write returned); scorer and "
        "projector as subprocesses with default settings "
        f"(ml.batch_size {settings.ml.batch_size}, poll {settings.ml.poll_timeout} s; twin "
        f"batch {settings.twin.batch_size}, poll {settings.twin.poll_timeout} s)",
    }
    write_results(f"latency_{args.label}" if args.label else "latency", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
