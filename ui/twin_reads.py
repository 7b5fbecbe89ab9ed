"""Read-only queries of the twins collection that the explorer's pages need.

Every query is bounded: counts and aggregations run on the server, lists have a limit and a
page, projections leave the heavy ``history`` out. The filters only touch indexed fields of the
twin document (``last_seen``, ``anomaly.*``, ``health.conditions.name``, the firmware value).
Query building is pure (unit-tested); the functions taking a collection do the I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from twin.health import CONDITION_NAMES

Twins = Collection[dict[str, Any]]
AnomalyFilter = Literal["any", "anomalous", "normal", "unscored"]

FIRMWARE = "reported.control_unit_firmware.value"

#: Columns of the fleet table, as (label, twin path); only these are fetched.
TABLE_FIELDS: dict[str, str] = {
    "car": "_id",
    "health": "health.status",
    "conditions": "health.conditions.name",
    "anomalous": "anomaly.is_anomaly",
    "score": "anomaly.score",
    "firmware": FIRMWARE,
    "last seen": "last_seen",
    "readings": "counters.readings_applied",
}
SORTABLE: dict[str, str] = {
    "car id": "_id",
    "last seen": "last_seen",
    "anomaly score": "anomaly.score",
    "firmware": FIRMWARE,
}


@dataclass(frozen=True)
class TableQuery:
    """What the fleet table asks for; every part maps onto an indexed field."""

    search: str = ""  # car id prefix (an anchored regex uses the _id index)
    conditions: tuple[str, ...] = ()  # cars with any of these health conditions
    anomaly: AnomalyFilter = "any"
    firmware: tuple[int, ...] = ()
    seen_within: timedelta | None = None  # last seen at most this long before the fleet clock
    silent_for: timedelta | None = None  # not seen for at least this long
    sort: str = "car id"
    descending: bool = False
    page: int = 0
    page_size: int = 50


def table_filter(query: TableQuery, clock: datetime | None) -> dict[str, Any]:
    """The MongoDB filter for a table query; ``clock`` is the fleet's newest reading time."""
    parts: list[dict[str, Any]] = []
    if query.search.strip():
        parts.append({"_id": {"$regex": "^" + re.escape(query.search.strip())}})
    if query.conditions:
        parts.append({"health.conditions.name": {"$in": list(query.conditions)}})
    if query.anomaly == "anomalous":
        parts.append({"anomaly.is_anomaly": True})
    elif query.anomaly == "normal":
        parts.append({"anomaly.is_anomaly": False})
    elif query.anomaly == "unscored":
        parts.append({"anomaly": None})
    if query.firmware:
        parts.append({FIRMWARE: {"$in": list(query.firmware)}})
    if clock is not None and query.seen_within is not None:
        parts.append({"last_seen": {"$gte": clock - query.seen_within}})
    if clock is not None and query.silent_for is not None:
        parts.append({"last_seen": {"$lt": clock - query.silent_for}})
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def table_sort(query: TableQuery) -> list[tuple[str, int]]:
    direction = DESCENDING if query.descending else ASCENDING
    path = SORTABLE[query.sort]
    # _id last makes pages stable when many cars share a value.
    return [(path, direction)] if path == "_id" else [(path, direction), ("_id", ASCENDING)]


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


# --- I/O: each function is one bounded round trip (or a handful) ---


def fleet_clock(twins: Twins) -> datetime | None:
    """Event time of the newest reading in the fleet (reporting windows are measured from it,
    so a replayed or time-lapsed fleet reads the same as a live one)."""
    doc = twins.find_one(
        {"last_seen": {"$ne": None}}, {"last_seen": 1}, sort=[("last_seen", DESCENDING)]
    )
    return doc["last_seen"] if doc else None


@dataclass(frozen=True)
class FleetSummary:
    twins: int
    reporting: int  # seen within the reporting window before the fleet clock
    anomalous: int
    scored: int
    attention: int  # at least one health condition
    conditions: dict[str, int]  # cars per health condition name
    firmware: dict[Any, int]  # cars per reported firmware version
    clock: datetime | None


def fleet_summary(twins: Twins, window: timedelta) -> FleetSummary:
    """Fleet-wide counts, all computed by the server with index-backed counts."""
    total = twins.estimated_document_count()
    clock = fleet_clock(twins)
    reporting = (
        twins.count_documents({"last_seen": {"$gte": clock - window}}) if clock is not None else 0
    )
    versions = [v for v in twins.distinct(FIRMWARE) if v is not None]
    return FleetSummary(
        twins=total,
        reporting=reporting,
        anomalous=twins.count_documents({"anomaly.is_anomaly": True}),
        scored=twins.count_documents({"anomaly.is_anomaly": {"$in": [True, False]}}),
        attention=twins.count_documents({"health.status": "attention"}),
        conditions={
            name: twins.count_documents({"health.conditions.name": name})
            for name in CONDITION_NAMES
        },
        firmware={v: twins.count_documents({FIRMWARE: v}) for v in sorted(versions)},
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
    projection = {path: 1 for path in TABLE_FIELDS.values() if path != "health.conditions.name"}
    projection["health.conditions.name"] = 1
    cursor = (
        twins.find(table_filter(query, clock), projection)
        .sort(table_sort(query))
        .skip(query.page * query.page_size)
        .limit(query.page_size)
    )
    return table_rows(list(cursor))


def firmware_versions(twins: Twins) -> list[Any]:
    return sorted(v for v in twins.distinct(FIRMWARE) if v is not None)


def get_twin(twins: Twins, car_id: str) -> dict[str, Any] | None:
    return twins.find_one({"_id": car_id})


def similar_ids(twins: Twins, car_id: str, limit: int = 5) -> list[str]:
    """A few existing car ids sharing the typed prefix, to help after a typo."""
    prefix = re.match(r"[A-Za-z_-]*", car_id)
    stem = prefix.group(0) if prefix else ""
    cursor = twins.find({"_id": {"$regex": "^" + re.escape(stem)}}, {"_id": 1}).limit(limit)
    return [d["_id"] for d in cursor]


def leaderboard(
    twins: Twins, limit: int = 25, only_anomalous: bool = False
) -> list[dict[str, Any]]:
    """The highest anomaly scores in the fleet, with the sensors that drive them."""
    where: dict[str, Any] = (
        {"anomaly.is_anomaly": True} if only_anomalous else {"anomaly.score": {"$ne": None}}
    )
    cursor = (
        twins.find(where, {"anomaly": 1, "health.status": 1, "last_seen": 1})
        .sort([("anomaly.score", DESCENDING), ("_id", ASCENDING)])
        .limit(limit)
    )
    return list(cursor)
