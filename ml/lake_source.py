"""Training input from the data lake (batch mode), through the lake's own reader.

`lake.reader.Lake` lists only the event-date/hour partitions the slice needs; here the slice
rules match the Kafka source: event time in ``[start_ms, end_ms)``, and a reading archived
twice (same car id and seq, e.g. produced twice by a restarted bridge) counts once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from fleet.contract import SENSORS
from fleet.settings import Settings
from lake.reader import Lake


class EmptyLakeError(RuntimeError):
    pass


def read_lake(
    settings: Settings, start_ms: int | None = None, end_ms: int | None = None
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    """Telemetry columns (the feature pipeline's input) and a description of the slice."""
    lake = Lake(settings)
    frame = lake.read_polars("telemetry", start=start_ms, end=end_ms)
    if frame.height == 0:
        raise EmptyLakeError(
            f"no telemetry in the lake (gs://{settings.gcs.bucket}) with event time in "
            f"[{start_ms}, {end_ms})"
        )
    unique = frame.sort("kafka_partition", "kafka_offset").unique(
        subset=["car_id", "seq"], keep="first", maintain_order=True
    )
    info = {
        "source": "lake",
        "bucket": settings.gcs.bucket,
        "objects": lake.last_read,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "readings": unique.height,
        "duplicates": frame.height - unique.height,
    }
    return _columns(unique), info


def _columns(frame: pl.DataFrame) -> dict[str, npt.NDArray[Any]]:
    """The same columns as `ml.features.columns_from_records`, straight from Arrow."""
    columns: dict[str, npt.NDArray[Any]] = {
        "car_id": frame["car_id"].to_numpy().astype(object),
        "event_time": frame["event_time"].to_numpy().astype(np.int64),
        "seq": frame["seq"].to_numpy().astype(np.int64),
    }
    for name in SENSORS:
        columns[name] = frame[name].to_numpy().astype(np.float64)
    columns["failure_occurred"] = np.array(frame["failure_occurred"].to_list(), dtype=object)
    modes = np.empty(frame.height, dtype=object)  # filled one by one: tuples must stay tuples
    for i, active in enumerate(frame["failure_modes"].to_list()):
        modes[i] = tuple(active or ())
    columns["failure_modes"] = modes
    return columns
