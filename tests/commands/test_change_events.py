"""Twin-change events when the projector dies between its MongoDB write and producing them."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.avro import twin_change_codec
from fleet.service import Shutdown
from fleet.settings import Settings
from fleet.waiting import wait_for
from tests.commands.factories import cmd
from tests.commands.helpers import read_all, topic_total
from tests.kafka import produce
from tests.twin.factories import reading
from tests.twin.kafka_helpers import (
    FAST_GROUP,
    all_twins,
    events_applied,
    running_projector,
)
from twin import commands
from twin.changes import ChangeView, comparable_paths
from twin.projector import Projector

pytestmark = pytest.mark.integration


class Died(Exception):
    pass


def test_a_change_lost_in_a_crash_comes_back_as_a_snapshot(fresh_settings: Settings) -> None:
    settings = fresh_settings
    cars = [f"car{c}" for c in range(5)]
    produce(settings, [reading(car, seq=s) for s in range(3) for car in cars])
    commands.send(settings, [cmd(car, 2001) for car in cars])
    total = 5 * 3 + 5

    first = Projector(settings, Shutdown(), **FAST_GROUP)

    def die(_written: Any) -> int:
        raise Died("killed after the MongoDB write, before producing the change events")

    assert first.changes is not None
    first.changes.emit = die  # type: ignore[method-assign]
    with pytest.raises(Died):
        first.run()
    written = events_applied(settings)
    assert 0 < written <= total  # some twins written...
    assert topic_total(settings, settings.topics.twin_changes) == 0  # ...but no change event

    with running_projector(settings):
        wait_for(lambda: events_applied(settings) == total, 60, "every event applied")
        wait_for(
            lambda: topic_total(settings, settings.topics.twin_changes) >= len(cars),
            30,
            "change events",
        )
    twins = all_twins(settings)
    view = ChangeView()
    events = read_all(settings, settings.topics.twin_changes, twin_change_codec())
    for event in events:
        view.apply(event)
    assert any(e["snapshot"] for e in events)  # the redelivered cars' snapshots
    for car, twin in twins.items():
        assert view.revisions[car] == twin["revision"]
        assert view.values[car] == comparable_paths(twin)
        assert twin["desired"]["firmware"]["value"] == 2001
