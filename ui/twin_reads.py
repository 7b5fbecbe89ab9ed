"""The explorer's reads of the twins, built on the twin package's query API (`twin.queries`).

`twin.queries` owns the filters (`TwinFilter`), sort orders and projections; this module adds
only what a screen needs on top: a car-id prefix search, a "seen within" window, paging, and
fleet-wide counts made of index-backed `count_twins` calls (never a scan of the collection).
Query building is pure (unit-tested); the functions taking a collection do the I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pymongo import DESCENDING
from pymongo.collection import Collection

from twin import queries
from twin.health import CONDITION_NAMES
from twin.queries import TwinFilter

Twins = Collection[dict[str, Any]]
AnomalyChoice = Literal["any", "anomalous", "not anomalous"]

FIRMWARE = "reported.control_unit_firmware.value"
#: Sort orders offered by the table: labels for `twin.queries.SORTS`.
SORTABLE: dict[str, str] = {
    "car id": "car",
    "anomaly score (highest first)": "anomaly",
    "last seen (oldest first)": "last_seen",
}


@dataclass(frozen=True)
class TableQuery:
    """What the fleet table asks for: twin's filter plus a prefix search, a window and a page."""

    search: str = ""  # car id prefix (an anchored regex uses the _id index)
    condition: str | None = None
    anomaly: AnomalyChoice = "any"
    firmware: int | None = None
    seen_within: timedelta | None = None  # last seen at most this long before the fleet clock
    silent_for: timedelta | None = None  # not seen for at least this long
    sort: str = "car id"
    reverse: bool = False
    page: int = 0
    page_size: int = 50


def twin_filter(query: TableQuery, clock: datetime | None) -> TwinFilter:
    anomalous = {"any": None, "anomalous": True, "not anomalous": False}[query.anomaly]
    silent_since = clock - query.silent_for if clock and query.silent_for else None
    return TwinFilter(
        anomalous=anomalous,
        condition=query.condition,
        not_seen_since=silent_since,
        firmware=query.firmware,
    )


def table_filter(query: TableQuery, clock: datetime | None) -> dict[str, Any]:
    """The MongoDB filter: twin's own filter, and the table's extras, all on indexed fields."""
    parts: list[dict[str, Any]] = []
    base = twin_filter(query, clock).query()
    if base:
        parts.append(base)
    if query.search.strip():
        parts.append({"_id": {"$regex": "^" + re.escape(query.search.strip())}})
    if clock is not None and query.seen_within is not None:
        parts.append({"last_seen": {"$gte": clock - query.seen_within}})
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def table_sort(query: TableQuery) -> list[tuple[str, int]]:
    order = queries.SORTS[SORTABLE[query.sort]]
    if not query.reverse:
        return order
    # Reverse the main key only; the _id tie-breaker keeps pages stable either way.
    (path, direction), *rest = order
    return [(path, -direction), *rest]


def table_rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten projected twins into table rows."""
    rows = []
    for doc in docs:
        anomaly = doc.get("anomaly") or {}
        health = doc.get("health") or {}
        firmware = (doc.get("reported") or {}).get("control_unit_firmware") or {}
        rows.append(
            {
                "car": doc["_id"],
                "health": health.get("status", "unknown"),
                "conditions": ", ".join(sorted({c["name"] for c in health.get("conditions", [])})),
                "anomalous": anomaly.get("is_anomaly"),
                "score": anomaly.get("score"),
                "firmware": firmware.get("value"),
                "last seen": doc.get("last_seen"),
                "readings": (doc.get("counters") or {}).get("readings_applied", 0),
            }
        )
    return rows


#: The table's columns only (not the reported values, history or positions).
TABLE_PROJECTION = {
    "health.status": 1,
    "health.conditions.name": 1,
    "anomaly.is_anomaly": 1,
    "anomaly.score": 1,
    FIRMWARE: 1,
    "last_seen": 1,
    "counters.readings_applied": 1,
}


# --- I/O: each function is one bounded round trip (or a handful) ---


def fleet_clock(twins: Twins) -> datetime | None:
    """Event time of the newest reading on any twin. Used when Kafka cannot tell (see
    `ui.cached.fleet_clock`): a server without limit push-down reads every twin for it."""
    doc = twins.find_one(
        {"last_seen": {"$ne": None}}, {"last_seen": 1}, sort=[("last_seen", DESCENDING)]
    )
    return doc["last_seen"] if doc else None


@dataclass(frozen=True)
class FleetSummary:
    twins: int
    reporting: int  # seen within the reporting window before the clock
    anomalous: int
    attention: int  # at least one health condition
    conditions: dict[str, int]  # cars per health condition name
    clock: datetime | None


def fleet_summary(twins: Twins, window: timedelta, clock: datetime | None) -> FleetSummary:
    """Fleet-wide counts. Each count matches the few cars it counts (the anomalous, the silent,
    those with a condition) through an index, never the whole fleet: "reporting" is the total
    minus the silent cars."""
    total = twins.estimated_document_count()
    count = queries.count_twins
    silent = count(twins, TwinFilter(not_seen_since=clock - window)) if clock else total
    return FleetSummary(
        twins=total,
        reporting=max(0, total - silent),
        anomalous=count(twins, TwinFilter(anomalous=True)),
        # Cars with any condition, through the condition index (not a scan of health.status).
        attention=twins.count_documents({"health.conditions.name": {"$in": CONDITION_NAMES}}),
        conditions={name: count(twins, TwinFilter(condition=name)) for name in CONDITION_NAMES},
        clock=clock,
    )


def anomaly_onsets(twins: Twins, limit: int = 20_000) -> list[datetime]:
    """When each currently anomalous car turned anomalous (at most ``limit``, newest first)."""
    cursor = (
        twins.find(
            {"anomaly.is_anomaly": True},
            {"_id": 0, "anomaly.anomalous_since": 1},
        )
        .sort("anomaly.anomalous_since", DESCENDING)
        .limit(limit)
    )
    return [d["anomaly"]["anomalous_since"] for d in cursor if d["anomaly"].get("anomalous_since")]


def table_count(twins: Twins, query: TableQuery, clock: datetime | None) -> int:
    where = table_filter(query, clock)
    return twins.count_documents(where) if where else twins.estimated_document_count()


def table_page(twins: Twins, query: TableQuery, clock: datetime | None) -> list[dict[str, Any]]:
    """The rows of the requested page (only the table's fields are fetched)."""
    cursor = (
        twins.find(table_filter(query, clock), TABLE_PROJECTION)
        .sort(table_sort(query))
        .skip(query.page * query.page_size)
        .limit(query.page_size)
    )
    return table_rows(list(cursor))


def get_twin(twins: Twins, car_id: str) -> dict[str, Any] | None:
    return queries.get_twin(twins, car_id)


def similar_ids(twins: Twins, car_id: str, limit: int = 5) -> list[str]:
    """A few existing car ids sharing the typed prefix, to help after a typo."""
    prefix = re.match(r"[A-Za-z_-]*", car_id)
    stem = prefix.group(0) if prefix else ""
    cursor = (
        twins.find({"_id": {"$regex": "^" + re.escape(stem)}}, {"_id": 1}).sort("_id").limit(limit)
    )
    return [d["_id"] for d in cursor]


def leaderboard(
    twins: Twins, limit: int = 25, only_anomalous: bool = False
) -> list[dict[str, Any]]:
    """The highest anomaly scores in the fleet, with the sensors that drive them."""
    if only_anomalous:
        return queries.top_anomalous(twins, limit)
    where = {"anomaly.score": {"$ne": None}}
    cursor = twins.find(where, queries.SUMMARY).sort(queries.SORTS["anomaly"]).limit(limit)
    return list(cursor)
