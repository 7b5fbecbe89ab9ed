"""A car's history over any range: the history collection for what it keeps, the lake before.

The history collection (twin/history.py) keeps `twin.history_retention_days` of readings and
scores; the lake keeps every event. A range that reaches back past the retention is cut at
the retention horizon: events before it come from the lake, the rest from the collection, so
each event is shown once (a collection expires documents lazily, so it may still hold a few
older than the horizon: they are not asked for). Both parts have the collection's document
shape (twin.history.to_document), oldest first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import polars as pl
from pymongo.database import Database

from fleet.contract import SENSORS
from lake.reader import Lake
from twin.history import Document, Kind
from twin.history import car_history as collection_history

#: Lake dataset -> the history document kind of its events.
DATASETS: dict[str, Kind] = {"telemetry": "reading", "anomalies": "score"}


def horizon(retention_days: float, now: dt.datetime) -> dt.datetime | None:
    """The oldest event time the collection keeps (None: it keeps everything)."""
    return now - dt.timedelta(days=retention_days) if retention_days > 0 else None


def lake_documents(frame: pl.DataFrame, kind: Kind, topic: str) -> list[Document]:
    """Lake rows of one dataset as history documents (pure)."""
    out: list[Document] = []
    for row in frame.to_dicts():
        doc: Document = {
            "t": dt.datetime.fromtimestamp(row["event_time"] / 1000, dt.UTC),
            "car": row["car_id"],
            "kind": kind,
            "seq": row["seq"],
            "topic": topic,
            "partition": row["kafka_partition"],
            "offset": row["kafka_offset"],
            "source": "lake",
        }
        if kind == "reading":
            doc.update((name, row[name]) for name in SENSORS)
        else:
            doc.update(
                score=row["score"],
                threshold=row["threshold"],
                is_anomaly=row["is_anomaly"],
                model=f"{row['model_name']}:{row['model_version']}",
                top_sensors=[s["sensor"] for s in row["top_sensors"] or []],
            )
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
    from the lake before the collection's retention horizon (when a lake is given), from the
    collection after it. ``topics``: each lake dataset's topic (the documents name it)."""
    cut = horizon(retention_days, now or dt.datetime.now(dt.UTC))
    if lake is None or cut is None or since >= cut:
        return collection_history(database, collection, car_id, since, until=until, kinds=kinds)
    older_until = cut if until is None else min(until, cut)
    names = topics or {"telemetry": "fleet.telemetry.v1", "anomalies": "fleet.anomalies.v1"}
    older = from_lake(lake, car_id, since, older_until, kinds=kinds, topics=names)
    if until is not None and until < cut:
        return older
    return older + collection_history(database, collection, car_id, cut, until=until, kinds=kinds)
