"""Training input from the data lake (batch mode): Avro container files of telemetry records in
the GCS bucket, read with fastavro, through the same slice rules and feature pipeline as Kafka.

Any object under the prefix whose name ends in ``.avro`` is read; records keep the event-time
range ``[start_ms, end_ms)`` and duplicates (same car id and seq) are dropped, as for Kafka.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import numpy.typing as npt

from fleet import clients
from fleet.settings import Settings
from ml.features import columns_from_records


class EmptyLakeError(RuntimeError):
    pass


def read_lake(
    settings: Settings, prefix: str, start_ms: int | None = None, end_ms: int | None = None
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    bucket = clients.gcs_bucket(settings)
    names: list[str] = []
    seen: set[tuple[str, int]] = set()
    records: list[dict[str, Any]] = []
    duplicates = 0
    for blob in clients.gcs_client(settings).list_blobs(bucket, prefix=prefix):
        if not blob.name.endswith(".avro"):
            continue
        names.append(blob.name)
        for record in fastavro.reader(io.BytesIO(blob.download_as_bytes())):
            assert isinstance(record, dict)
            t = record["event_time"]
            if (start_ms is not None and t < start_ms) or (end_ms is not None and t >= end_ms):
                continue
            key = (record["car_id"], record["seq"])
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            records.append(record)
    if not records:
        raise EmptyLakeError(
            f"no telemetry in gs://{settings.gcs.bucket}/{prefix}*.avro "
            f"with event time in [{start_ms}, {end_ms})"
        )
    info = {
        "source": "lake",
        "bucket": settings.gcs.bucket,
        "prefix": prefix,
        "objects": sorted(names),
        "start_ms": start_ms,
        "end_ms": end_ms,
        "readings": len(records),
        "duplicates": duplicates,
    }
    return columns_from_records(records), info
