"""Scoring throughput: readings in Kafka -> anomaly events in Kafka, with offsets committed.

    .venv/bin/python bench/ml_score.py [--size 200000]

Starts its own Kafka + GCS (or uses the stack named by FLEET_* variables), publishes ``size``
simulated readings, promotes a small model and runs the scorer until the topic is drained.
Also measures the pure in-process path (decode, features, autoencoder, encode) without Kafka.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._ml_common import stack, write_results
from fleet.avro import telemetry_codec
from fleet.service import Shutdown
from ml import features as ft
from ml import registry, simdata
from ml import train as training
from ml.scorer import Scorer


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
        cols = simdata.simulated_columns(300, 30, seed=3, profile="seed", failure_rate=0.5)
        training.train(
            cols, training.TrainConfig(epochs=3, supervised=False, progress=False), Path(tmp)
        )
        version = registry.new_version()
        name = settings.ml.model_name
        registry.upload(settings, Path(tmp), name, version)
        registry.promote(settings, name, version)
        model = registry.load_dir(Path(tmp), name, version)

        # In-process path, no Kafka: what one scorer process computes (bulk decode, features,
        # autoencoder, bulk encode), as the scorer does it.
        messages = telemetry_codec().encode_many(records)
        local = Scorer(settings)
        local.model = model
        local.compute(messages[: args.batch])  # warm up (first TF call traces)
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        for i in range(0, len(messages), args.batch):
            _batch, payloads, _verdict = local.compute(messages[i : i + args.batch])
            assert len(payloads) == len(messages[i : i + args.batch])
        in_process = len(messages) / (time.perf_counter() - t0)
        chunk = messages[: args.batch]
        t0 = time.perf_counter()
        decoded = local.decoder.decode(chunk)
        stages["bulk_decode_per_s"] = len(chunk) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for m in chunk:
            telemetry_codec().decode(m)
        stages["fastavro_decode_per_s"] = len(chunk) / (time.perf_counter() - t0)
        x = ft.transform(decoded.columns, model.normalizer)
        t0 = time.perf_counter()
        model.scores(x)
        stages["autoencoder_per_s"] = len(chunk) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        simdata.publish(settings, records)
        publish_rate = len(records) / (time.perf_counter() - t0)
        load_before = os.getloadavg()
        scorer = Scorer(settings)
        scorer.run(Shutdown(), max_idle=5.0)
        load_after = os.getloadavg()
        assert scorer.scored == len(records), (scorer.scored, len(records))
        assert scorer.first_batch_at is not None and scorer.last_batch_at is not None
        through_kafka = scorer.scored / (scorer.last_batch_at - scorer.first_batch_at)
    figures = {
        "readings": len(records),
        "batch_size": args.batch,
        "kafka_to_kafka_events_per_s": through_kafka,
        "in_process_events_per_s": in_process,
        "publish_readings_per_s": publish_rate,
        "stages": stages,
        "goal_events_per_s": 50_000,
        "load_average_1_5_15_before": load_before,
        "load_average_1_5_15_after": load_after,
        "note": "kafka_to_kafka: first batch polled to last batch committed, one scorer "
        "process (bulk decode, features, autoencoder, bulk encode, produce, wait for acks=all, "
        "commit); in_process: the same computation without Kafka",
    }
    write_results("scoring", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
