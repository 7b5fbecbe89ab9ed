"""Cached, read-only data for the pages, keyed by where the data lives.

Each function takes ``key`` (server, database, collection) so two explorers pointed at
different databases never share entries; the collection handle itself is not hashed. Fleet-wide
figures are computed once per TTL and shared by every render and browser tab within it; the
TTL counts from when a computation finished, so even a slow one is reused. The fleet clock is
passed as ``_clock`` (not part of the key): an entry may use a clock up to its TTL old.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from twin import live
from ui import anchors, context, fleet_count, streams, twin_reads
from ui.twin_reads import Cursor, FleetSummary, TableQuery

Key = twin_reads.Where
log = logging.getLogger(__name__)
#: Fleet figures on the overview are at most this old (its default refresh interval).
SUMMARY_TTL_S = 10
#: Table counts and pages are at most this old (a filter change asks again at once).
TABLE_TTL_S = 30
#: The number of twins changes only when cars join, and counting them is not free on every
#: server (SecantusDB walks every document for it): recounted in the background once it is
#: this old (ui/fleet_count.py).
SIZE_TTL_S = 60


def key() -> Key:
    s = context.settings()
    return (s.mongodb_uri, s.mongodb.database, s.twin.collection)


def fleet_size(k: Key) -> int:
    twins = context.twins()  # the handle, made here: a refresh thread has no Streamlit session
    with context.mongo_errors():
        return fleet_count.latest(k, twins.estimated_document_count, SIZE_TTL_S)


@st.cache_data(ttl=SUMMARY_TTL_S, max_entries=64, show_spinner=False)
def summary(k: Key, window_s: float, _clock: datetime | None) -> FleetSummary:
    total = fleet_size(k)
    with context.mongo_errors():
        return twin_reads.fleet_summary(context.twins(), timedelta(seconds=window_s), _clock, total)


def _recent_cars() -> tuple[str, ...]:
    """A sample of the fleet's car ids, from both ends of the telemetry topic (empty if Kafka
    cannot tell)."""
    return streams.car_sample(context.settings())


def fleet_clock() -> tuple[datetime, bool]:
    """The fleet's clock and whether it is the fleet's own: the event time of the newest reading
    on the telemetry topic (one fetch per partition; so a replayed or time-lapsed fleet reads
    like a live one). When Kafka cannot tell, the wall clock (finding the newest twin would
    read every twin on servers that do not walk an index for a limit)."""
    stream = streams.telemetry(context.settings())
    if stream.newest_ms is not None:
        return datetime.fromtimestamp(stream.newest_ms / 1000, tz=UTC), True
    return datetime.now(UTC), False


@st.cache_data(ttl=TABLE_TTL_S, max_entries=256, show_spinner=False)
def table_count(k: Key, query: TableQuery, _clock: datetime | None) -> int:
    # The fleet's size only when a term is "all twins" (a prefix search need not wait for it).
    whole = any(not where for _sign, where in twin_reads.count_terms(query, _clock))
    total = fleet_size(k) if whole else None
    with context.mongo_errors():
        return twin_reads.table_count(context.twins(), query, _clock, total)


@st.cache_data(ttl=TABLE_TTL_S, max_entries=256, show_spinner=False)
def table_page(
    k: Key, query: TableQuery, _clock: datetime | None
) -> tuple[list[dict[str, Any]], Cursor | None]:
    with context.mongo_errors():
        if query.after is None:  # from an anchor, remembered or guessed (ui/anchors.py)
            return anchors.first_page(context.twins(), k, query, _clock, _recent_cars)
        return twin_reads.table_page(context.twins(), query, _clock)


@st.cache_resource(show_spinner=False)
def warm_up(k: Key) -> None:
    """Once per explorer process and database, in a background thread: count the twins (the
    overview and the table need the count; SecantusDB walks every twin for it)."""
    # The handles, made here: the thread has no Streamlit session. The live twins are looked
    # up there: a server that is away must not hold up the page (the pages report it).
    database, name = context.database(), context.settings().twin.collection

    def run() -> None:
        try:
            twins = live.live_twins(database, name)
            fleet_count.latest(k, twins.estimated_document_count, SIZE_TTL_S)
        except Exception as exc:  # best effort: the pages report a failing server themselves
            log.warning("explorer warm-up: the twins not counted: %s", exc)

    threading.Thread(target=run, name="explorer-warm-up", daemon=True).start()


@st.cache_data(ttl=2, show_spinner=False)
def twin(k: Key, car_id: str) -> dict[str, Any] | None:
    with context.mongo_errors():
        return twin_reads.get_twin(context.twins(), car_id)


@st.cache_data(ttl=2, show_spinner=False)
def car_history(k: Key, car_id: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """One car's readings and scores in [since, until] from the history collection."""
    from twin.history import car_history as read

    with context.mongo_errors():
        s = context.settings()
        return read(context.database(), s.twin.history_collection, car_id, since, until=until)


@st.cache_data(ttl=30, show_spinner=False)
def similar_ids(k: Key, car_id: str) -> list[str]:
    with context.mongo_errors():
        return twin_reads.similar_ids(context.twins(), car_id)


@st.cache_data(ttl=5, show_spinner=False)
def leaderboard(k: Key, limit: int, only_anomalous: bool) -> list[dict[str, Any]]:
    with context.mongo_errors():
        return twin_reads.leaderboard(context.twins(), limit, only_anomalous)


@st.cache_data(ttl=10, show_spinner=False)
def fleet_alarm_periods(k: Key, since: datetime, until: datetime) -> Any:
    """Every car's alarm periods in [since, until], replayed from the history's flagged
    scores (ui/alarm_history.py)."""
    from ui import alarm_history

    with context.mongo_errors():
        s = context.settings()
        flagged = alarm_history.flagged_scores(
            context.database(), s.twin.history_collection, since, until
        )
    return alarm_history.fleet_alarm_periods(flagged)
