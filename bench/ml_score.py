"""Scoring throughput: readings in Kafka -> anomaly events in Kafka, with offsets committed.

    .venv/bin/python bench/ml_score.py [--size 200000]

Starts its own Kafka + GCS (or uses the stack named by FLEET_* variables), publishes ``size``
simulated readings, promotes a small model and runs the scorer until the topic is drained.
Also measures the pure in-process path (decode, features, autoencoder, encode) without Kafka.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._ml_common import stack, write_results
from fleet.avro import anomaly_codec, telemetry_codec
from fleet.service import Shutdown
from ml import features as ft
from ml import registry, simdata
from ml import train as training
from ml.scorer import Scorer, anomaly_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    cars = 1000
    records = simdata.simulated_records(cars, max(1, args.size // cars), seed=21)
    with stack() as base, tempfile.TemporaryDirectory() as tmp:
        settings = base.model_copy(
            update={"ml": base.ml.model_copy(update={"batch_size": args.batch})}
        )
        cols = simdata.simulated_columns(300, 30, seed=3, failure_rate=0.5)
        training.train(
            cols, training.TrainConfig(epochs=3, supervised=False, progress=False), Path(tmp)
        )
        version = registry.new_version()
        name = settings.ml.model_name
        registry.upload(settings, Path(tmp), name, version)
        registry.promote(settings, name, version)
        model = registry.load_dir(Path(tmp), name, version)

        # In-process path, no Kafka: what one scorer process can compute.
        messages = telemetry_codec().encode_many(records)
        t0 = time.perf_counter()
        for i in range(0, len(messages), args.batch):
            chunk = [telemetry_codec().decode(m) for m in messages[i : i + args.batch]]
            x = ft.transform(ft.columns_from_records(chunk), model.normalizer)
            scores, errors = model.scores(x)
            events = anomaly_events(
                chunk, scores=scores, errors=errors, model=model, top=3, scored_at=0
            )
            anomaly_codec().encode_many(events)
        in_process = len(messages) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        simdata.publish(settings, records)
        publish_rate = len(records) / (time.perf_counter() - t0)
        scorer = Scorer(settings)
        scorer.run(Shutdown(), max_idle=5.0)
        assert scorer.scored == len(records), (scorer.scored, len(records))
        assert scorer.first_batch_at is not None and scorer.last_batch_at is not None
        through_kafka = scorer.scored / (scorer.last_batch_at - scorer.first_batch_at)
    figures = {
        "readings": len(records),
        "batch_size": args.batch,
        "kafka_to_kafka_events_per_s": through_kafka,
        "in_process_events_per_s": in_process,
        "publish_readings_per_s": publish_rate,
        "goal_events_per_s": 50_000,
        "note": "kafka_to_kafka: first batch polled to last batch committed, one scorer "
        "process (decode, features, autoencoder, encode, produce, wait for acks=all, commit)",
    }
    write_results("scoring", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
