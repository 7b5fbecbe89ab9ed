"""The lake as the Lake page needs it, through the lake package's reader and stats (cached).

The inventory comes from object metadata alone (no download); statistics and queries read
only the columns and event-time range asked for.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import polars as pl
import streamlit as st

from lake import stats
from lake.reader import Lake
from ui import context

LakeKey = tuple[str, str]
PROBE_TIMEOUT_S = 3.0
STATS_COLUMNS = {
    "telemetry": ["car_id", "event_time", "failure_occurred", "failure_modes"],
    "anomalies": ["car_id", "event_time", "is_anomaly"],
}


def key() -> LakeKey:
    s = context.settings()
    return (s.gcs_endpoint, s.gcs.bucket)


@contextmanager
def gcs_errors() -> Iterator[None]:
    """Any failure to reach the bucket becomes one sentence."""
    try:
        yield
    except Exception as exc:
        s = context.settings()
        raise context.Unavailable(
            f"The lake bucket `{s.gcs.bucket}` is not readable at {s.gcs_endpoint} "
            f"({type(exc).__name__}). Start GCS with `fleet stack up gcs` or check FLEET_GCS_*."
        ) from exc


@dataclass(frozen=True)
class Inventory:
    objects: int
    events: int
    bytes: int
    first: datetime | None
    last: datetime | None


def _lake() -> Lake:
    return Lake(context.settings())


def probe(endpoint: str) -> None:
    """Fail fast when nothing answers at the endpoint: the storage client would retry for
    minutes before giving up, and a page must not hang that long."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    with socket.create_connection((url.hostname or "localhost", port), timeout=PROBE_TIMEOUT_S):
        pass


@st.cache_data(ttl=30, show_spinner=False)
def inventory(k: LakeKey, dataset: str) -> Inventory:
    with gcs_errors():
        probe(k[0])
        objects = _lake().objects(dataset)
    times = [t for o in objects for t in (o.min_time, o.max_time) if t is not None]
    return Inventory(
        objects=len(objects),
        events=sum(o.records or 0 for o in objects),
        bytes=sum(o.size for o in objects),
        first=_dt(min(times)) if times else None,
        last=_dt(max(times)) if times else None,
    )


@dataclass(frozen=True)
class RangeStats:
    summary: dict[str, Any]
    per_hour: pd.DataFrame
    per_day: pd.DataFrame
    incidence: pd.DataFrame | None  # telemetry only: failure-mode incidence from the labels


@st.cache_data(ttl=60, show_spinner="Reading the lake…")
def range_stats(k: LakeKey, dataset: str, start: datetime, end: datetime) -> RangeStats:
    with gcs_errors():
        frame = _lake().read_polars(
            dataset, start=start, end=end, columns=STATS_COLUMNS[dataset], progress=False
        )
    per_hour = stats.events_per_hour(frame).to_pandas()
    if not per_hour.empty:
        per_hour["hour start"] = pd.to_datetime(per_hour["date"]) + pd.to_timedelta(
            per_hour["hour"], unit="h"
        )
    incidence = None
    if dataset == "telemetry":
        incidence = stats.failure_incidence(frame).to_pandas()
    return RangeStats(
        summary=stats.summary(frame),
        per_hour=per_hour,
        per_day=stats.events_per_day(frame).to_pandas(),
        incidence=incidence,
    )


@st.cache_data(ttl=60, show_spinner="Querying the lake…")
def query(
    k: LakeKey,
    dataset: str,
    *,
    start: datetime,
    end: datetime,
    cars: tuple[str, ...] | None,
    columns: tuple[str, ...] | None,
) -> pl.DataFrame:
    with gcs_errors():
        frame = _lake().read_polars(
            dataset,
            start=start,
            end=end,
            cars=cars,
            columns=list(columns) if columns else None,
            progress=False,
        )
    return frame.sort("event_time", "car_id")


@st.cache_data(ttl=60, show_spinner="Reading the car's older history from the lake…")
def car_history(k: LakeKey, car_id: str, since: datetime, before: datetime) -> list[dict[str, Any]]:
    """One car's readings and scores in [since, before) from the lake, as history documents:
    for ranges older than the history collection keeps."""
    from lake.history import from_lake

    s = context.settings()
    with gcs_errors():
        probe(k[0])
        topics = {"telemetry": s.topics.telemetry, "anomalies": s.topics.anomalies}
        return from_lake(_lake(), car_id, since, before, kinds=("reading", "score"), topics=topics)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def csv_bytes(frame: pl.DataFrame) -> bytes:
    """CSV of a query result; nested columns (failure modes, top sensors) as their text form."""
    return frame.to_pandas().to_csv(index=False).encode()
