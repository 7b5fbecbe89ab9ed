"""Reading the twins: the Python API behind `fleet twin get/list` and the fleet explorer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from fleet import clients
from fleet.settings import Settings
from twin import live
from twin.fold import Twin
from twin.health import CONDITION_NAMES


def twins(settings: Settings) -> Collection[Twin]:
    """The live twins collection of these settings (a rebuild swaps in another: twin/live.py)."""
    return live.live_twins(clients.mongo_database(settings), settings.twin.collection)


def get_twin(collection: Collection[Twin], car_id: str) -> Twin | None:
    return collection.find_one({"_id": car_id})


@dataclass(frozen=True)
class TwinFilter:
    """What `fleet twin list` and the explorer filter on; None means "any"."""

    anomalous: bool | None = None
    condition: str | None = None  # a condition name, e.g. tire_pressure_low
    not_seen_since: datetime | None = None  # last reading older than this (or none at all)
    firmware: int | None = None

    def query(self) -> dict[str, Any]:
        query: dict[str, Any] = {}
        if self.anomalous is not None:
            query["anomaly.is_anomaly"] = True if self.anomalous else {"$ne": True}
        if self.condition is not None:
            if self.condition not in CONDITION_NAMES:
                raise ValueError(
                    f"unknown condition {self.condition!r}; one of {', '.join(CONDITION_NAMES)}"
                )
            query["health.conditions.name"] = self.condition
        if self.not_seen_since is not None:
            query["$or"] = [{"last_seen": {"$lt": self.not_seen_since}}, {"last_seen": None}]
        if self.firmware is not None:
            query["reported.control_unit_firmware.value"] = self.firmware
        return query


#: Sort orders for lists: the field and direction.
SORTS: dict[str, list[tuple[str, int]]] = {
    "car": [("_id", ASCENDING)],
    "anomaly": [("anomaly.score", DESCENDING), ("_id", ASCENDING)],
    "last_seen": [("last_seen", ASCENDING), ("_id", ASCENDING)],
}

#: The parts a list needs (the reading identities are bookkeeping, bytes on the wire).
SUMMARY = {"recent_readings": False}  # lists stay one line per car


def list_twins(
    collection: Collection[Twin],
    where: TwinFilter | None = None,
    sort: str = "car",
    limit: int = 100,
) -> list[Twin]:
    cursor = collection.find((where or TwinFilter()).query(), SUMMARY).sort(SORTS[sort])
    return list(cursor.limit(limit))


def count_twins(collection: Collection[Twin], where: TwinFilter | None = None) -> int:
    return collection.count_documents((where or TwinFilter()).query())


def cars_with_low_tire_pressure(collection: Collection[Twin], limit: int = 100) -> list[Twin]:
    return list_twins(collection, TwinFilter(condition="tire_pressure_low"), limit=limit)


def top_anomalous(collection: Collection[Twin], n: int = 10) -> list[Twin]:
    return list_twins(collection, TwinFilter(anomalous=True), sort="anomaly", limit=n)


def not_seen_for(
    collection: Collection[Twin], minutes: float, now: datetime | None = None, limit: int = 100
) -> list[Twin]:
    since = (now or datetime.now(UTC)) - timedelta(minutes=minutes)
    return list_twins(collection, TwinFilter(not_seen_since=since), sort="last_seen", limit=limit)


def counts_by_firmware(collection: Collection[Twin]) -> dict[int | None, int]:
    pipeline: list[dict[str, Any]] = [
        {"$group": {"_id": "$reported.control_unit_firmware.value", "cars": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]
    return {row["_id"]: row["cars"] for row in collection.aggregate(pipeline)}


def counts_by_condition(collection: Collection[Twin]) -> dict[str, int]:
    pipeline: list[dict[str, Any]] = [
        {"$unwind": "$health.conditions"},
        {"$group": {"_id": "$health.conditions.name", "cars": {"$addToSet": "$_id"}}},
        {"$project": {"cars": {"$size": "$cars"}}},
        {"$sort": {"_id": 1}},
    ]
    return {row["_id"]: row["cars"] for row in collection.aggregate(pipeline)}
