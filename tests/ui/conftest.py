"""Fixtures of the explorer's tests: a seeded twins database and a way to render a page."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from fleet import clients
from fleet.settings import Settings
from fleet.waiting import wait_for
from lake.reader import Lake
from tests.conftest import isolate
from tests.lake.conftest import archiving
from tests.twin.kafka_helpers import (
    events_applied,
    history_count,
    produce,
    running_history,
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
    """`isolate`d settings plus a lake bucket of their own (module-scoped fixtures need it)."""
    own = isolate(settings)
    bucket = f"ui-lake-{uuid.uuid4().hex[:8]}"
    clients.gcs_client(settings).create_bucket(bucket)
    gcs = own.gcs.model_copy(update={"bucket": bucket})
    lake = own.lake.model_copy(update={"flush_seconds": 0.5})
    # The simulated readings are of 2019: kept, not expired by the history's retention.
    twin = own.twin.model_copy(update={"history_retention_days": 0})
    return own.model_copy(update={"gcs": gcs, "lake": lake, "twin": twin})


SILENT = ("car1", "car2", "car3")


def fleet_events() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The module fleet's readings and scores (deterministic: same seed, same events)."""
    return simulated_events(
        cars=60,
        steps=8,
        failure_rate=0.6,
        scored=45,
        silent=SILENT,
        interval_ms=120_000,
        scores_per_car=3,
    )


@pytest.fixture(scope="session")
def fleet(stack_env: dict[str, str]) -> tuple[Settings, list[dict[str, Any]]]:
    """60 simulated cars (45 scored on their last 3 readings, 3 silent after two readings)
    projected into twins by the real twin projector from Kafka (and archived by the real lake
    archiver); shared by the session's UI tests, which only read it."""
    settings = isolated(Settings())
    readings, scores = fleet_events()
    produce(settings, readings)
    produce(settings, scores)
    with running_projector(settings), archiving(settings), running_history(settings):
        wait_for(
            lambda: events_applied(settings) == len(readings) + len(scores),
            timeout=120,
            what="the projector to apply every event",
        )
        wait_for(
            lambda: history_count(settings) == len(readings) + len(scores),
            timeout=120,
            what="the history projection to hold every event",
        )
        lake = Lake(settings)
        wait_for(
            lambda: sum(o.records or 0 for o in lake.objects("telemetry")) == len(readings),
            timeout=120,
            what="the archiver to put every reading in the lake",
        )
    return settings, list(twins_collection(settings).find())


@pytest.fixture
def render(fleet: tuple[Settings, list[dict[str, Any]]]) -> Render:
    return render_with(fleet[0])
