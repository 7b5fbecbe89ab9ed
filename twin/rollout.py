"""Rollout progress: which cars reached a desired value, which are on the way, which failed.

Read-only queries behind `fleet twin rollout` and the explorer's Rollout page. The status of a
car is ``twin.desired.rollout_status``: done once it reports the desired value, failed when it
still does not ``timeout`` after the command (the update failed, or the car never came back),
pending in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection

from fleet.contract import DESIRED_PROPERTIES
from twin.desired import Status, status_filter
from twin.fold import Twin

STATUSES: tuple[Status, ...] = ("done", "pending", "failed")


@dataclass
class RolloutProgress:
    name: str
    rollout_id: str | None
    counts: dict[str, int]
    #: Cars not done (pending and failed), oldest command first, up to ``limit`` of each.
    cars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def rollouts(collection: Collection[Twin], name: str = "firmware") -> list[dict[str, Any]]:
    """The rollouts of a property: id, cars, first command time; newest first."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {f"desired.{name}.rollout_id": {"$ne": None}}},
        {
            "$group": {
                "_id": f"$desired.{name}.rollout_id",
                "cars": {"$sum": 1},
                "value": {"$first": f"$desired.{name}.value"},
                "since": {"$min": f"$desired.{name}.time"},
            }
        },
        {"$sort": {"since": -1}},
    ]
    return [
        {"rollout_id": r["_id"], "cars": r["cars"], "value": r["value"], "since": r["since"]}
        for r in collection.aggregate(pipeline)
    ]


def _row(twin: Twin, name: str) -> dict[str, Any]:
    delta = (twin.get("delta") or {}).get(name) or {}
    return {
        "car": twin["_id"],
        "desired": delta.get("desired"),
        "reported": delta.get("reported"),
        "since": delta.get("since"),
        "last_seen": twin.get("last_seen"),
    }


def rollout_progress(  # noqa: PLR0917 (query options)
    collection: Collection[Twin],
    name: str = "firmware",
    rollout_id: str | None = None,
    timeout: timedelta = timedelta(minutes=10),
    now: datetime | None = None,
    limit: int = 100,
) -> RolloutProgress:
    if name not in DESIRED_PROPERTIES:
        raise ValueError(f"unknown property {name!r}; known: {', '.join(DESIRED_PROPERTIES)}")
    now = now or datetime.now(UTC)
    counts: dict[str, int] = {
        status: collection.count_documents(status_filter(name, status, now, timeout, rollout_id))
        for status in STATUSES
    }
    projection = {f"delta.{name}": 1, "last_seen": 1}
    cars = {
        status: [
            _row(t, name)
            for t in collection.find(
                status_filter(name, status, now, timeout, rollout_id), projection
            )
            .sort([(f"delta.{name}.since", 1), ("_id", 1)])
            .limit(limit)
        ]
        for status in ("pending", "failed")
    }
    return RolloutProgress(name, rollout_id, counts, cars)
