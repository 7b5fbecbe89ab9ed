"""Cached, read-only data for the pages: short TTLs, keyed by where the data lives.

Each function takes ``key`` (server, database, collection) so two explorers pointed at
different databases never share entries; the collection handle itself is not hashed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from ui import context, streams, twin_reads
from ui.twin_reads import FleetSummary, TableQuery

Key = tuple[str, str, str]


def key() -> Key:
    s = context.settings()
    return (s.mongodb_uri, s.mongodb.database, s.twin.collection)


@st.cache_data(ttl=3, show_spinner=False)
def summary(k: Key, window_s: float, clock: datetime | None) -> FleetSummary:
    with context.mongo_errors():
        return twin_reads.fleet_summary(context.twins(), timedelta(seconds=window_s), clock)


def fleet_clock(k: Key) -> datetime | None:
    """The fleet's clock: event time of the newest reading. Reporting windows and "silent for"
    filters are measured from it, so a replayed or time-lapsed fleet reads like a live one.
    Kafka tells it in one fetch per partition; without Kafka, the newest twin tells."""
    stream = streams.telemetry(context.settings())
    if stream.newest_ms is not None:
        return datetime.fromtimestamp(stream.newest_ms / 1000, tz=UTC)
    return _twin_clock(k)


@st.cache_data(ttl=30, show_spinner=False)
def _twin_clock(k: Key) -> datetime | None:
    with context.mongo_errors():
        return twin_reads.fleet_clock(context.twins())


@st.cache_data(ttl=5, show_spinner=False)
def onsets(k: Key) -> list[Any]:
    with context.mongo_errors():
        return twin_reads.anomaly_onsets(context.twins())


@st.cache_data(ttl=3, show_spinner=False)
def table_count(k: Key, query: TableQuery, clock: datetime | None) -> int:
    with context.mongo_errors():
        return twin_reads.table_count(context.twins(), query, clock)


@st.cache_data(ttl=3, show_spinner=False)
def table_page(k: Key, query: TableQuery, clock: datetime | None) -> list[dict[str, Any]]:
    with context.mongo_errors():
        return twin_reads.table_page(context.twins(), query, clock)


@st.cache_data(ttl=2, show_spinner=False)
def twin(k: Key, car_id: str) -> dict[str, Any] | None:
    with context.mongo_errors():
        return twin_reads.get_twin(context.twins(), car_id)


@st.cache_data(ttl=30, show_spinner=False)
def similar_ids(k: Key, car_id: str) -> list[str]:
    with context.mongo_errors():
        return twin_reads.similar_ids(context.twins(), car_id)


@st.cache_data(ttl=5, show_spinner=False)
def leaderboard(k: Key, limit: int, only_anomalous: bool) -> list[dict[str, Any]]:
    with context.mongo_errors():
        return twin_reads.leaderboard(context.twins(), limit, only_anomalous)
