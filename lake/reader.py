"""Batch reads of the lake: list and read objects by event-time range, car ids and columns.

Only the date/hour prefixes that the time range needs are listed; objects whose metadata (event
time bounds, car list) shows they cannot match are not downloaded. Files are decoded with
polars' Avro reader (Rust, columnar), in parallel, into one Arrow table or pandas DataFrame.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import fastavro
import polars as pl
from google.cloud import storage

from fleet import clients
from fleet.settings import Settings
from lake.avrofile import container_file
from lake.datasets import lake_schema_of
from lake.naming import DATASET_PREFIXES, parse_object_name, prefixes_for_range

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

Time = datetime | int | None
#: Show a progress bar from this many objects on (when stderr is a terminal, or when asked).
PROGRESS_FROM = 20


def to_ms(value: Time) -> int | None:
    """Event-time bound as ms since the epoch; naive datetimes are taken as UTC."""
    if value is None or isinstance(value, int):
        return value
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


@dataclass(frozen=True)
class LakeObject:
    name: str
    size: int
    hour: int
    topic: str
    partition: int
    first_offset: int
    records: int | None
    min_time: int | None
    max_time: int | None
    cars: frozenset[str] | None  # None: not recorded (too many), may hold any car

    def may_match(self, start: int | None, end: int | None, cars: frozenset[str] | None) -> bool:
        if start is not None and self.max_time is not None and self.max_time < start:
            return False
        if end is not None and self.min_time is not None and self.min_time >= end:
            return False
        return not (cars is not None and self.cars is not None and not (cars & self.cars))


def _object(blob: storage.Blob) -> LakeObject | None:
    parts = parse_object_name(blob.name)
    if parts is None:
        return None
    meta = blob.metadata or {}

    def number(key: str) -> int | None:
        return int(meta[key]) if key in meta else None

    cars = meta.get("cars")
    return LakeObject(
        blob.name,
        int(blob.size or 0),
        parts.hour,
        parts.topic,
        parts.partition,
        parts.first_offset,
        number("records"),
        number("min_event_time"),
        number("max_event_time"),
        frozenset(cars.split(",")) if cars is not None and cars != "" else None,
    )


class Lake:
    """The lake in one bucket: ``Lake(settings)`` or ``Lake(bucket=...)``."""

    def __init__(
        self,
        settings: Settings | None = None,
        bucket: storage.Bucket | None = None,
        threads: int | None = None,
    ) -> None:
        if bucket is None:
            if settings is None:
                from fleet.settings import get_settings

                settings = get_settings()
            bucket = clients.gcs_bucket(settings)
        self.bucket = bucket
        self.threads = threads or (settings.lake.read_threads if settings else 8)
        #: Names of the objects the last read downloaded (tests check pruning with it).
        self.last_read: list[str] = []

    def objects(
        self,
        dataset: str = "telemetry",
        *,
        start: Time = None,
        end: Time = None,
        cars: Iterable[str] | None = None,
    ) -> list[LakeObject]:
        """Objects that may hold events of ``cars`` with event time in [start, end)."""
        if dataset not in DATASET_PREFIXES:
            raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASET_PREFIXES)}")
        lo, hi = to_ms(start), to_ms(end)
        wanted = frozenset(cars) if cars is not None else None
        found: list[LakeObject] = []
        for prefix in prefixes_for_range(DATASET_PREFIXES[dataset], lo, hi):
            for blob in self.bucket.list_blobs(prefix=prefix):
                obj = _object(blob)
                if obj is not None and obj.may_match(lo, hi, wanted):
                    found.append(obj)
        return sorted(found, key=lambda o: (o.hour, o.topic, o.partition, o.first_offset))

    def read_polars(
        self,
        dataset: str = "telemetry",
        *,
        start: Time = None,
        end: Time = None,
        cars: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
        progress: bool | None = None,
    ) -> pl.DataFrame:
        """Events of ``cars`` (all if None) with event time in [start, end), as polars."""
        car_set = frozenset(cars) if cars is not None else None
        objects = self.objects(dataset, start=start, end=end, cars=car_set)
        lo, hi = to_ms(start), to_ms(end)
        needed = None
        if columns is not None:
            needed = list(dict.fromkeys([*columns, "car_id", "event_time"]))

        def load(obj: LakeObject) -> pl.DataFrame:
            data = self.bucket.blob(obj.name).download_as_bytes()
            frame = pl.read_avro(io.BytesIO(data), columns=needed)
            keep = []
            if lo is not None and (obj.min_time is None or obj.min_time < lo):
                keep.append(pl.col("event_time") >= lo)
            if hi is not None and (obj.max_time is None or obj.max_time >= hi):
                keep.append(pl.col("event_time") < hi)
            if car_set is not None and (obj.cars is None or not obj.cars <= car_set):
                keep.append(pl.col("car_id").is_in(list(car_set)))
            return frame.filter(*keep) if keep else frame

        self.last_read = [o.name for o in objects]
        frames = self._map(load, objects, progress, f"reading {dataset}")
        if not frames:
            return self._empty(dataset, columns)
        frame = pl.concat(frames, how="vertical", rechunk=False)
        return frame.select(list(columns)) if columns is not None else frame

    def read_arrow(self, dataset: str = "telemetry", **kwargs: Any) -> pa.Table:
        """Like :meth:`read_polars`, as a pyarrow Table."""
        return self.read_polars(dataset, **kwargs).to_arrow()

    def read_pandas(self, dataset: str = "telemetry", **kwargs: Any) -> pd.DataFrame:
        """Like :meth:`read_polars`, as a pandas DataFrame (Arrow-backed columns)."""
        return self.read_polars(dataset, **kwargs).to_pandas(use_pyarrow_extension_array=True)

    def _map(
        self,
        fn: Callable[[LakeObject], pl.DataFrame],
        objects: list[LakeObject],
        progress: bool | None,
        what: str,
    ) -> list[pl.DataFrame]:
        show = progress if progress is not None else sys.stderr.isatty()
        with ThreadPoolExecutor(self.threads) as pool:
            results = pool.map(fn, objects)
            if not show or len(objects) < PROGRESS_FROM:
                return list(results)
            from rich.console import Console
            from rich.progress import Progress

            out = []
            # On stderr, so a bar never mixes with data written to stdout.
            with Progress(console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(what, total=len(objects))
                for frame in results:
                    out.append(frame)
                    bar.advance(task)
            return out

    @staticmethod
    def _empty(dataset: str, columns: Sequence[str] | None) -> pl.DataFrame:
        """No rows, but the dataset's columns and types (read from a one-record file)."""
        schema = lake_schema_of(dataset)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, _zero(schema))
        data = container_file(schema, [buf.getvalue()], "empty")
        frame = pl.read_avro(io.BytesIO(data), columns=list(columns) if columns else None)
        return frame.clear()


def _zero(schema: Any) -> Any:
    """The simplest value of an Avro schema (null for unions that allow it)."""
    if isinstance(schema, list):
        return None if "null" in schema else _zero(schema[0])
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return {f["name"]: _zero(f["type"]) for f in schema["fields"]}
        if kind == "array":
            return []
        if kind == "map":
            return {}
        return _zero(kind)
    return {"string": "", "bytes": b"", "boolean": False, "null": None}.get(schema, 0)
