"""A car's history over any range: the history collection for what it keeps, the lake before.

The history collection (twin/history.py) keeps `twin.history_retention_days` of readings and
scores (counted back from now: its TTL compares event times with the clock); the lake keeps
every event. For a range that reaches back past the retention, the collection answers first,
and the lake fills in what comes before the collection's oldest event in the range (or the
whole range when it has none): the two parts never overlap, so each event is shown once, and
documents the collection has not expired yet are used, not read twice. Both parts have the
collection's document shape (twin.history.to_document), oldest first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import polars as pl
from pymongo.database import Database

from lake.reader import Lake
from twin.history import Document, Kind, to_document
from twin.history import car_history as collection_history
from twin.project import Raw

#: Lake dataset -> the history document kind of its events.
DATASETS: dict[str, Kind] = {"telemetry": "reading", "anomalies": "score"}


def horizon(retention_days: float, now: dt.datetime) -> dt.datetime | None:
    """The oldest event time the collection keeps (None: it keeps everything)."""
    return now - dt.timedelta(days=retention_days) if retention_days > 0 else None


def lake_documents(frame: pl.DataFrame, kind: Kind, topic: str) -> list[Document]:
    """Lake rows of one dataset as history documents (pure): a lake row is the event's record
    with its Kafka position beside it."""
    out: list[Document] = []
    for row in frame.to_dicts():
        where = Raw(topic, row["kafka_partition"], row["kafka_offset"], b"", b"")
        doc = to_document(kind, row, where)
        doc["t"] = doc["t"].replace(tzinfo=None)  # naive UTC, as the collection's come back
        doc["source"] = "lake"
        out.append(doc)
    return out


def from_lake(
    lake: Lake,
    car_id: str,
    since: dt.datetime,
    before: dt.datetime,
    *,
    kinds: Sequence[Kind],
    topics: dict[str, str],
) -> list[Document]:
    """One car's events with event time in [since, before) from the lake, oldest first."""
    found: list[Document] = []
    for dataset, kind in DATASETS.items():
        if kind in kinds:
            frame = lake.read_polars(dataset, start=since, end=before, cars=[car_id])
            found += lake_documents(frame, kind, topics[dataset])
    return sorted(found, key=lambda d: (d["t"], d["kind"], d["seq"]))


def car_history(
    database: Database[Any],
    collection: str,
    car_id: str,
    since: dt.datetime,
    *,
    until: dt.datetime | None = None,
    kinds: Sequence[Kind] = ("reading", "score"),
    lake: Lake | None = None,
    retention_days: float = 0,
    topics: dict[str, str] | None = None,
    now: dt.datetime | None = None,
) -> list[Document]:
    """One car's readings and scores in ``[since, until]``, oldest first, each event once:
    the collection's, and when the range reaches back past its retention (and a lake is
    given), the lake's before the collection's oldest. ``topics``: each lake dataset's topic
    (the documents name it)."""
    kept = collection_history(database, collection, car_id, since, until=until, kinds=kinds)
    end = lake_until(since, until, kept, retention_days, now or dt.datetime.now(dt.UTC))
    if lake is None or end is None:
        return kept
    names = topics or {"telemetry": "fleet.telemetry.v1", "anomalies": "fleet.anomalies.v1"}
    return from_lake(lake, car_id, since, end, kinds=kinds, topics=names) + kept


def lake_until(
    since: dt.datetime,
    until: dt.datetime | None,
    kept: Sequence[Document],
    retention_days: float,
    now: dt.datetime,
) -> dt.datetime | None:
    """Where the lake's part of ``[since, until]`` ends, given what the collection returned
    (``kept``, oldest first); None when the collection covers the range (pure)."""
    cut = horizon(retention_days, now)
    if cut is None or since >= cut:
        return None
    if kept:
        oldest = as_utc(kept[0]["t"])
        return oldest if oldest > since else None
    return now if until is None else until + dt.timedelta(milliseconds=1)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A datetime from the collection (naive UTC unless the client says otherwise), aware."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
