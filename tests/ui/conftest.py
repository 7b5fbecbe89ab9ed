"""Fixtures of the explorer's tests: a seeded twins database and a way to render a page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from fleet import clients
from fleet.settings import Settings
from tests.ui.fleetdata import simulated_twins
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


@pytest.fixture
def fleet(fresh_settings: Settings) -> tuple[Settings, list[dict[str, Any]]]:
    """60 simulated cars (45 scored) in this test's own twins collection."""
    twins = simulated_twins(cars=60, steps=8, failure_rate=0.6, scored=45)
    clients.mongo_database(fresh_settings)[fresh_settings.twin.collection].insert_many(twins)
    return fresh_settings, twins


@pytest.fixture
def render(fleet: tuple[Settings, list[dict[str, Any]]]) -> Render:
    return render_with(fleet[0])
