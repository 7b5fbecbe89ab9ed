"""tensorflow-io ingestion rate from Kafka against reading the same records from a local Avro file.

    .venv/bin/python bench/ml_ingest.py [--size 200000]

Kafka: every partition through tensorflow-io's group reader (raw message bytes), then decoded
with the telemetry codec; the trailing stream timeout (the reader's way to notice the end) is
subtracted. File: the same records in an Avro container file read back with fastavro.
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

import fastavro

from bench._ml_common import stack, write_results
from fleet.avro import load_schema
from fleet.bulk_avro import TelemetryBatchDecoder
from ml import kafka_source, simdata

STREAM_TIMEOUT_MS = 3000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=200_000)
    args = parser.parse_args()
    cars = 1000
    records = simdata.simulated_records(cars, max(1, args.size // cars), seed=31)
    with stack(("kafka",)) as settings, tempfile.TemporaryDirectory() as tmp:
        simdata.publish(settings, records)
        topic = settings.topics.telemetry
        offsets = kafka_source.partition_offsets(settings, topic)
        t0 = time.perf_counter()
        messages = kafka_source.read_messages(settings, topic, offsets, STREAM_TIMEOUT_MS)
        tfio_seconds = time.perf_counter() - t0 - STREAM_TIMEOUT_MS / 1000
        assert len(messages) == len(records), (len(messages), len(records))
        t0 = time.perf_counter()
        decoded = TelemetryBatchDecoder().decode(messages)  # what training does
        decode_seconds = time.perf_counter() - t0
        assert len(decoded) == len(records)

        path = Path(tmp) / "telemetry.avro"
        with path.open("wb") as f:
            fastavro.writer(f, fastavro.parse_schema(load_schema("telemetry-v1")), records)
        t0 = time.perf_counter()
        with path.open("rb") as f:
            from_file = list(fastavro.reader(f))
        file_seconds = time.perf_counter() - t0
        assert len(from_file) == len(records)
    n = len(records)
    figures = {
        "readings": n,
        "tfio_raw_messages_per_s": n / tfio_seconds,
        "tfio_plus_decode_records_per_s": n / (tfio_seconds + decode_seconds),
        "avro_file_records_per_s": n / file_seconds,
        "ratio_tfio_plus_decode_to_file": (n / (tfio_seconds + decode_seconds))
        / (n / file_seconds),
        "load_average_1_5_15": os.getloadavg(),
        "note": "tfio time includes joining the consumer group, excludes the trailing "
        f"{STREAM_TIMEOUT_MS} ms stream timeout; decode = the bulk decoder training uses; "
        "file = fastavro reading an Avro container file of the same records",
    }
    write_results("ingestion", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
