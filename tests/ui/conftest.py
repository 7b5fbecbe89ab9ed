"""Fixtures of the explorer's tests: a seeded twins database and a way to render a page."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from fleet import clients
from fleet.service import Shutdown
from fleet.settings import Settings
from fleet.waiting import wait_for
from lake.archiver import Archiver
from lake.reader import Lake
from tests.twin.kafka_helpers import (
    FAST_GROUP,
    events_applied,
    produce,
    running_projector,
    twins_collection,
)
from tests.ui.fleetdata import simulated_events
from ui.context import SETTINGS_KEY

APP = "ui/app.py"
PAGES = {
    "overview": "views/overview.py",
    "table": "views/fleet_table.py",
    "car": "views/car.py",
    "anomalies": "views/anomalies.py",
    "lake": "views/lake.py",
    "models": "views/models.py",
}

Render = Callable[..., AppTest]


def render_with(settings: Settings) -> Render:
    def render(
        page: str, query: dict[str, str] | None = None, at: AppTest | None = None
    ) -> AppTest:
        if at is None:
            at = AppTest.from_file(APP, default_timeout=60)
            at.session_state[SETTINGS_KEY] = settings
        at.switch_page(PAGES[page])
        at.query_params.clear()
        at.query_params.update(query or {})
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    return render


def isolated(settings: Settings) -> Settings:
    """The stack's settings with their own topics, database and groups (as `fresh_settings`)."""
    from fleet.topics import create_topics, topic_specs

    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(
        update={
            name: f"{getattr(settings.topics, name)}.{suffix}"
            for name in ("telemetry", "anomalies", "dead_letters", "models")
        }
    )
    groups = settings.groups.model_copy(
        update={name: f"{value}-{suffix}" for name, value in settings.groups.model_dump().items()}
    )
    mongodb = settings.mongodb.model_copy(update={"database": f"fleet_ui_{suffix}"})
    bucket = f"ui-lake-{suffix}"
    clients.gcs_client(settings).create_bucket(bucket)
    gcs = settings.gcs.model_copy(update={"bucket": bucket})
    lake = settings.lake.model_copy(update={"flush_seconds": 0.5})
    own = settings.model_copy(
        update={"topics": topics, "groups": groups, "mongodb": mongodb, "gcs": gcs, "lake": lake}
    )
    create_topics(clients.kafka_admin(own), topic_specs(own))
    return own


SILENT = ("car1", "car2", "car3")


def fleet_events() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The module fleet's readings and scores (deterministic: same seed, same events)."""
    return simulated_events(
        cars=60, steps=8, failure_rate=0.6, scored=45, silent=SILENT, interval_ms=120_000
    )


@pytest.fixture(scope="session")
def fleet(stack_env: dict[str, str]) -> tuple[Settings, list[dict[str, Any]]]:
    """60 simulated cars (45 scored, 3 silent after two readings) projected into twins by the
    real twin projector from Kafka (and archived by the real lake archiver); shared by the
    session's UI tests, which only read it."""
    settings = isolated(Settings())
    readings, scores = fleet_events()
    produce(settings, readings)
    produce(settings, scores)
    with running_projector(settings), archiving(settings):
        wait_for(
            lambda: events_applied(settings) == len(readings) + len(scores),
            timeout=120,
            what="the projector to apply every event",
        )
        lake = Lake(settings)
        wait_for(
            lambda: sum(o.records or 0 for o in lake.objects("telemetry")) == len(readings),
            timeout=120,
            what="the archiver to put every reading in the lake",
        )
    return settings, list(twins_collection(settings).find())


@contextmanager
def archiving(settings: Settings) -> Iterator[None]:
    """The real lake archiver in a thread, stopped cleanly on exit."""
    shutdown = Shutdown()
    archiver = Archiver(settings, shutdown, **FAST_GROUP)
    thread = threading.Thread(target=archiver.run, name="archiver", daemon=True)
    thread.start()
    try:
        yield
    finally:
        shutdown.request()
        thread.join(60)


@pytest.fixture
def render(fleet: tuple[Settings, list[dict[str, Any]]]) -> Render:
    return render_with(fleet[0])
