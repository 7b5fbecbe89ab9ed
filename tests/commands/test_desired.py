"""The desired part of the twin, folded from command events (pure: no servers)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from fleet.avro import command_codec
from tests.commands.factories import cmd
from tests.twin.factories import T0, reading
from twin.desired import COMMANDS_REMEMBERED, DIGEST_BYTES, parse_assignment, rollout_status
from twin.events import Envelope, ms_to_datetime
from twin.fold import Twin, fold


def as_events(items: list[dict], start: int = 0) -> list[Envelope]:
    """Readings on a telemetry partition, commands on a commands partition, in list order."""
    out = []
    for i, record in enumerate(items):
        if "command_id" in record:
            out.append(Envelope("commands", 0, start + i, "command", record))
        else:
            out.append(Envelope("telemetry", 0, start + i, "telemetry", record))
    return out


def fold_all(items: list[dict], current: Twin | None = None, start: int = 0) -> Twin:
    return fold_with_outcomes(items, current, start)[0]


def fold_with_outcomes(
    items: list[dict], current: Twin | None = None, start: int = 0
) -> tuple[Twin, list[dict]]:
    """The twin, and the outcomes of the commands folded (written beside the twins)."""
    result = fold(current, "car1", as_events(items, start))
    assert result.twin is not None
    return result.twin, result.commands


def test_a_command_sets_desired_and_the_delta_until_the_car_reports_it() -> None:
    twin = fold_all([reading(seq=0, control_unit_firmware=1000), cmd(value=2000, command_id="c1")])
    assert twin["desired"] == {
        "firmware": {
            "value": 2000,
            "time": ms_to_datetime(T0),
            "version": 1,
            "command_id": "c1",
            "rollout_id": None,
        }
    }
    assert twin["desired_version"] == 1
    assert twin["delta"] == {
        "firmware": {"desired": 2000, "reported": 1000, "since": ms_to_datetime(T0)}
    }
    later = fold_all([reading(seq=1, control_unit_firmware=2000)], twin, start=10)
    assert later["delta"] == {}
    assert later["desired"] == twin["desired"]


def test_a_stale_expected_version_is_refused_and_logged_nothing_applied() -> None:
    twin = fold_all([reading(seq=0, control_unit_firmware=1000), cmd(value=2000)])
    stale = cmd(value=3000, expected_version=0, command_id="late-writer")
    after, (entry,) = fold_with_outcomes([stale], twin, start=5)
    assert after["desired"] == twin["desired"]
    assert after["desired_version"] == 1
    assert entry["command_id"] == entry["_id"] == "late-writer"
    assert entry["car_id"] == "car1"
    assert entry["outcome"] == "refused"
    assert entry["reason"] == "stale version: expected 0, the desired state is at version 1"
    assert after["revision"] == twin["revision"] + 1  # the refusal is a change of the twin
    current = fold_all([cmd(value=3000, expected_version=1)], after, start=6)
    assert current["desired"]["firmware"]["value"] == 3000
    assert current["desired_version"] == 2


@pytest.mark.parametrize(
    ("prop", "value", "reason"),
    [
        ("color", 1, "unknown property 'color'; known: firmware"),
        ("firmware", "2000", "firmware must be an integer, got '2000'"),
        ("firmware", 2.5, "firmware must be an integer, got 2.5"),
        ("firmware", True, "firmware must be an integer, got True"),
        ("firmware", -1, "firmware must be within [0, 1e+06], got -1"),
    ],
)
def test_bad_commands_are_refused_by_the_projector_too(
    prop: str, value: object, reason: str
) -> None:
    twin, (entry,) = fold_with_outcomes([reading(seq=0), cmd(prop=prop, value=value)])
    assert twin["desired"] == {}
    assert twin["desired_version"] == 0
    assert entry["outcome"] == "refused"
    assert entry["reason"] == reason


def test_the_same_command_twice_applies_once() -> None:
    first = cmd(command_id="same")
    twin, outcomes = fold_with_outcomes([reading(seq=0), first, dict(first)])
    assert twin["desired_version"] == 1
    assert [o["outcome"] for o in outcomes] == ["applied"]
    assert twin["counters"]["duplicates_skipped"] == 1
    again, none = fold_with_outcomes([dict(first)], twin, start=10)  # in a later batch too
    assert again["desired_version"] == 1 and none == []


def test_a_twin_remembers_only_its_last_commands_and_stays_small() -> None:
    twin = fold_all([reading(seq=0)])
    for i in range(3 * COMMANDS_REMEMBERED):
        twin = fold_all([cmd(value=2000 + i, command_id=f"c{i}")], twin, start=1 + i)
    assert len(twin["recent_commands"]) == COMMANDS_REMEMBERED * DIGEST_BYTES
    assert twin["desired_version"] == 3 * COMMANDS_REMEMBERED


def test_desired_and_delta_do_not_depend_on_how_topics_interleave() -> None:
    readings = [reading(seq=s, control_unit_firmware=1000 if s < 5 else 2000) for s in range(8)]
    commands = [cmd(value=2000, expected_version=0), cmd(value=2000, expected_version=0)]
    parts = ("desired", "desired_version", "delta", "reported", "recent_commands", "revision")
    results = []
    decided = []
    rng = random.Random(3)
    for _ in range(10):
        # A random merge of the two ordered topics, as a projector or a rebuild may see it.
        r, c, merged = list(readings), list(commands), []
        while r or c:
            source = r if (r and (not c or rng.random() < 0.7)) else c
            merged.append(source.pop(0))
        events = as_events(merged)
        folded = fold(None, "car1", events)
        assert folded.twin is not None
        results.append({p: folded.twin[p] for p in parts})
        decided.append(folded.commands)
    assert all(r == results[0] for r in results)
    assert all(d == decided[0] for d in decided)
    assert results[0]["delta"] == {}
    assert [e["outcome"] for e in decided[0]] == ["applied", "refused"]


def test_commands_survive_avro() -> None:
    codec = command_codec()
    for value in (2000, True, 2.5, "x"):
        record = cmd(value=value, expected_version=3, rollout_id="r-1")
        assert codec.decode(codec.encode(record)) == record
    assert codec.decode(codec.encode(cmd()))["expected_version"] is None


def test_parse_assignment() -> None:
    assert parse_assignment("firmware=2000") == ("firmware", 2000)
    assert parse_assignment(" firmware = 2001 ") == ("firmware", 2001)
    for text, message in [
        ("firmware", "expected PROPERTY=VALUE, got 'firmware'"),
        ("colour=red", "unknown property 'colour'; known: firmware"),
        ("firmware=new", "firmware must be an integer, got 'new'"),
    ]:
        with pytest.raises(ValueError, match="^" + message.replace("(", r"\(") + "$"):
            parse_assignment(text)


def test_rollout_status() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    since = now - timedelta(minutes=5)
    asked = {"desired": {"firmware": {"value": 2000, "time": since}}}
    assert rollout_status({}, "firmware", now, timedelta(minutes=10)) is None
    assert rollout_status(asked | {"delta": {}}, "firmware", now, timedelta(minutes=10)) == "done"
    open_delta = asked | {"delta": {"firmware": {"since": since}}}
    assert rollout_status(open_delta, "firmware", now, timedelta(minutes=10)) == "pending"
    assert rollout_status(open_delta, "firmware", now, timedelta(minutes=5)) == "failed"
