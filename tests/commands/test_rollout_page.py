"""The explorer's Rollouts page, rendered with AppTest over twins in the real MongoDB-wire
server, asserting on the numbers and cars it shows."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from fleet.settings import Settings
from tests.commands.factories import cmd
from tests.commands.helpers import fleet
from tests.commands.test_desired import as_events
from tests.twin.factories import reading
from tests.twin.kafka_helpers import twins_collection
from twin.fold import fold
from ui.context import SETTINGS_KEY

pytestmark = pytest.mark.integration

HOUR_MS = 3600 * 1000


def twin_of(car: str, reports: int, commanded_ms: int | None) -> dict:
    items: list[dict] = [reading(car, seq=0, control_unit_firmware=1000)]
    if commanded_ms is not None:
        items.append(cmd(car, 2000, issued_at=commanded_ms, rollout_id="r-test"))
    items.append(reading(car, seq=1, control_unit_firmware=reports))
    twin = fold(None, car, as_events(items)).twin
    assert twin is not None
    return twin


def render(settings: Settings) -> AppTest:
    at = AppTest.from_file("ui/app.py", default_timeout=60)
    at.session_state[SETTINGS_KEY] = settings
    at.switch_page("views/rollout.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_the_rollout_page_shows_done_pending_and_failed_cars(
    stack_env: dict[str, str], fresh_settings: Settings
) -> None:
    now = int(time.time() * 1000)
    twins = [
        *(twin_of(f"done{i}", 2000, now - HOUR_MS) for i in range(3)),
        twin_of("failed1", 1000, now - HOUR_MS),  # still on 1000 an hour after the command
        twin_of("failed2", 1000, now - 2 * HOUR_MS),
        twin_of("pending1", 1000, now - 1000),  # commanded a second ago
        twin_of("untouched", 1000, None),  # never asked: not part of any rollout
    ]
    twins_collection(fresh_settings).insert_many(twins)

    at = render(fresh_settings)
    shown = {m.label: m.value for m in at.metric}
    assert shown == {"Cars asked": "6", "Done": "3", "Pending": "1", "Failed": "2"}
    failed, pending = (frame.value for frame in at.dataframe)
    assert list(failed["car"]) == ["failed2", "failed1"]  # oldest command first
    assert list(failed["reported"]) == [1000, 1000]
    assert list(pending["car"]) == ["pending1"]
    assert "r-test: firmware=2000 (6 cars)" in at.selectbox(key="rollout.id").options

    # The same from the command line.
    shown = fleet(stack_env, fresh_settings, "twin", "rollout", "--rollout", "r-test")
    assert shown.returncode == 0, shown.stderr
    assert "firmware rollout r-test: 3 done, 1 pending, 2 failed of 6 cars" in shown.stdout
    assert "failed1" in shown.stdout
    assert "failed2" in shown.stdout


def test_the_rollout_page_says_how_to_start_one(fresh_settings: Settings) -> None:
    at = render(fresh_settings)
    assert "fleet twin set --where firmware=1000 firmware=2000" in at.info[0].value
