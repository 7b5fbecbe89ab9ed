"""Twin-change events and how a consumer follows them (pure: no servers)."""

from __future__ import annotations

import json

from fleet.avro import twin_change_codec
from tests.commands.factories import cmd
from tests.commands.test_desired import fold_all, fold_with_outcomes
from tests.twin.factories import reading
from twin.changes import ChangeView, Written, change_event, comparable_paths, diff
from twin.command_service import car_message


def test_a_change_lists_only_what_changed_with_the_new_values() -> None:
    before = fold_all([reading(seq=0, control_unit_firmware=1000)])
    after, outcomes = fold_with_outcomes([cmd(value=2000)], before, start=1)
    written = Written("car1", before, after, replayed=False, commands=tuple(outcomes))
    event = change_event(written, now_ms=5)
    assert event["revision"] == after["revision"]
    assert event["paths"] == [
        "commands",
        "delta.firmware",
        "desired.firmware",
        "desired_version",
    ]
    values = json.loads(event["values"])
    assert values["desired.firmware"]["value"] == 2000
    (outcome,) = values["commands"]  # what the write decided, though not twin state
    assert outcome["outcome"] == "applied" and outcome["version"] == 1
    assert values["delta.firmware"] == {
        "desired": 2000,
        "reported": 1000,
        "since": "2023-11-14T22:13:20.000Z",
    }
    assert event["snapshot"] is False
    assert twin_change_codec().decode(twin_change_codec().encode(event)) == event


def test_a_removed_delta_is_a_null_value() -> None:
    asked = fold_all([reading(seq=0, control_unit_firmware=1000), cmd(value=2000)])
    done = fold_all([reading(seq=1, control_unit_firmware=2000)], asked, start=5)
    changed = diff(asked, done)
    assert changed["delta.firmware"] is None
    assert "desired.firmware" not in changed


def test_a_follower_drops_duplicates_and_reproduces_the_twin() -> None:
    t1 = fold_all([reading(seq=0, control_unit_firmware=1000)])
    t2, outcomes = fold_with_outcomes([cmd(value=2000)], t1, start=1)
    t3 = fold_all([reading(seq=1, control_unit_firmware=2000)], t2, start=2)
    with_outcomes = Written("car1", t1, t2, False, commands=tuple(outcomes))
    events = [
        change_event(Written("car1", None, t1, False), 1),
        change_event(with_outcomes, 2),
        change_event(with_outcomes, 2),  # produced again after a crash
        change_event(Written("car1", t2, t3, False), 3),
    ]
    view = ChangeView()
    assert [view.apply(e) for e in events] == [True, True, False, True]
    assert view.duplicates == 1
    assert view.revisions["car1"] == t3["revision"]
    assert view.values["car1"] == comparable_paths(t3)


def test_a_snapshot_after_a_lost_change_repairs_the_follower() -> None:
    t1 = fold_all([reading(seq=0, control_unit_firmware=1000), cmd(value=2000)])
    t2 = fold_all([reading(seq=1, control_unit_firmware=2000)], t1, start=5)
    assert "delta.firmware" in comparable_paths(t1)
    assert "delta.firmware" not in comparable_paths(t2)  # the car converged in the lost change
    view = ChangeView()
    view.apply(change_event(Written("car1", None, t1, False), 1))
    # The change t1 -> t2 was written to MongoDB but never produced (a crash); the redelivered
    # events are no-ops on the twin, and the projector sends a snapshot of the stored twin.
    snapshot = change_event(Written("car1", t2, t2, replayed=True), 2)
    assert snapshot["snapshot"] is True
    assert view.apply(snapshot)
    assert view.values["car1"] == comparable_paths(t2)


def test_the_command_service_sends_only_desired_changes() -> None:
    t1 = fold_all([reading(seq=0, control_unit_firmware=1000)])
    t2 = fold_all([cmd(value=2000)], t1, start=1)
    t3 = fold_all([cmd(value=2000, expected_version=0)], t2, start=2)  # refused: stale
    assert car_message(change_event(Written("car1", None, t1, False), 1)) is None
    assert car_message(change_event(Written("car1", t1, t2, False), 1)) == {
        "car_id": "car1",
        "version": 1,
        "revision": t2["revision"],
        "desired": {"firmware": 2000},
    }
    assert car_message(change_event(Written("car1", t2, t3, False), 1)) is None
