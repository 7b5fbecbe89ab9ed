"""Producing test events to the real Kafka and running the projector in a thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fleet import clients
from fleet.service import Shutdown
from fleet.settings import Settings
from tests.kafka import produce  # noqa: F401  (re-exported for the twin's tests)
from tests.threads import running_in_thread
from twin import live
from twin.fold import Twin
from twin.history import HistoryProjector
from twin.projector import Projector

FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def with_twin(settings: Settings, **twin: Any) -> Settings:
    return settings.model_copy(update={"twin": settings.twin.model_copy(update=twin)})


@contextmanager
def running_projector(settings: Settings) -> Iterator[Projector]:
    """A projector in a thread; stopped (and its errors re-raised) on exit."""
    shutdown = Shutdown()
    projector = Projector(settings, shutdown, **FAST_GROUP)
    with running_in_thread("projector", projector.run, shutdown):
        yield projector


@contextmanager
def running_history(settings: Settings) -> Iterator[HistoryProjector]:
    """The history projection in a thread; stopped (and its errors re-raised) on exit."""
    shutdown = Shutdown()
    history = HistoryProjector(settings, shutdown, **FAST_GROUP)
    with running_in_thread("history", history.run, shutdown):
        yield history


def history_count(settings: Settings) -> int:
    database = clients.mongo_database(settings)
    return database[settings.twin.history_collection].count_documents({})


def twins_collection(settings: Settings) -> Any:
    """The live twins (a rebuild swaps in another collection: twin/live.py)."""
    return live.live_twins(clients.mongo_database(settings), settings.twin.collection)


def all_twins(settings: Settings) -> dict[str, Twin]:
    return {t["_id"]: t for t in twins_collection(settings).find()}


def events_applied(settings: Settings) -> int:
    """Total events recorded on the twins (each non-redelivered event bumps one revision)."""
    return sum(t["revision"] for t in twins_collection(settings).find({}, {"revision": 1}))


def cli_env(stack_env: dict[str, str], settings: Settings) -> dict[str, str]:
    """The environment that points a `fleet` subprocess at this test's topics and database."""
    import json
    import os

    return (
        os.environ
        | stack_env
        | {
            "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
            "FLEET_TOPICS_ANOMALIES": settings.topics.anomalies,
            "FLEET_GROUPS_TWIN": settings.groups.twin,
            "FLEET_GROUPS_HISTORY": settings.groups.history,
            "FLEET_MONGODB_DATABASE": settings.mongodb.database,
            "FLEET_KAFKA_EXTRA": json.dumps({"session.timeout.ms": "6000"}),
            "FLEET_LOG_FORMAT": "json",
        }
    )
