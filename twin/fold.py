"""The pure fold: one car's current twin + a batch of its events -> its next twin (no I/O).

Rules, in the order they are applied to each event (in Kafka order, never re-sorted, so the
result does not depend on how events were cut into batches):

1. Exactly-once effect: an event whose offset is <= the offset already recorded on the twin
   for its (topic, partition) was applied before (a redelivery) and changes nothing.
2. Event time: a reading older than the reported one (by event time, then seq) never
   overwrites reported values or health; it is counted as late. A reading equal to one
   already seen is a duplicate: the twin remembers the identities (event time, seq) of its
   newest `dedupe_window` readings, late ones that fit included, in `recent_readings`.
3. Anomaly scores fold the same way into the `anomaly` part, newest by event time wins; each
   newer score's flag also steps the car's verdict (ml/verdict.py: k of the last n readings
   above the threshold raise an alarm, none of the last m clear it). A newer model version's
   score of the newest reading replaces that reading's flag.
   Commands change the `desired` part (twin/desired.py); `delta` is recomputed after a batch.

A twin is state, not history: the readings and scores themselves go to the history
collection (twin/history.py), so a twin stays a few kB however long a car drives.
4. Every event that is not a redelivery bumps `revision` and records its offset.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from fleet.contract import SENSORS
from ml import verdict
from twin import desired, health
from twin.events import Envelope, datetime_to_ms, ms_to_datetime

Twin = dict[str, Any]

#: Readings whose identity a twin remembers, to tell a repeated reading from a late one.
DEFAULT_DEDUPE_WINDOW = 32

ReadingKey = tuple[int, int]  # (event time in ms, seq)
KEY_BYTES = 16  # a reading identity, packed


def recent_keys(twin: Twin) -> list[ReadingKey]:
    """The identities of the twin's newest readings, oldest first."""
    packed = twin.get("recent_readings") or b""
    pairs = np.frombuffer(packed, dtype="<i8").reshape(-1, 2).tolist()
    return [(int(t), int(s)) for t, s in pairs]


def pack_keys(keys: Sequence[ReadingKey]) -> bytes:
    """Reading identities as 16 bytes each (BSON binary: 32 of them cost 512 bytes, as a
    BSON array of pairs they would cost twice that)."""
    return np.asarray(keys, dtype="<i8").reshape(-1, 2).tobytes()


def new_twin(car_id: str) -> Twin:
    """The twin of a car nothing is known about yet (see README, "Twin document")."""
    return {
        "_id": car_id,
        "car_id": car_id,  # an indexed copy of _id: id ranges for the explorer (README)
        "revision": 0,
        "reported": {},
        "last_reading": None,
        "health": {"status": "unknown", "conditions": []},
        "anomaly": None,
        "recent_readings": b"",
        "counters": {
            "events_applied": 0,
            "readings_applied": 0,
            "scores_applied": 0,
            "late_skipped": 0,
            "duplicates_skipped": 0,
        },
        "first_seen": None,
        "last_seen": None,
        "positions": [],
    }


@dataclass
class FoldResult:
    twin: Twin | None  # None: nothing changed (every event was a redelivery)
    applied: int = 0  # events that changed the twin
    redelivered: int = 0  # events already recorded on the twin
    late: int = 0
    duplicates: int = 0
    #: The outcome of each command folded (twin/desired.py): not twin state, written apart.
    commands: list[dict[str, Any]] = field(default_factory=list)


def previous_reading(twin: Twin) -> dict[str, Any] | None:
    """The reported state as a reading, for rules that compare with the last step."""
    last = twin["last_reading"]
    if last is None:
        return None
    reading = {name: entry["value"] for name, entry in twin["reported"].items()}
    reading["event_time"] = datetime_to_ms(last["event_time"])
    reading["seq"] = last["seq"]
    return reading


def _apply_health(
    twin: Twin, reading: Mapping[str, Any], previous: Mapping[str, Any] | None, at: datetime
) -> None:
    verdicts = health.evaluate(reading, previous)
    active = {condition_key(c): c for c in twin["health"]["conditions"]}
    conditions = []
    for rule in health.RULES:
        verdict = verdicts[rule.key]
        current = active.get(rule.key)
        if verdict is None:  # this reading cannot tell: keep what we knew
            if current is not None:
                conditions.append(current)
        elif verdict:
            conditions.append(current if current is not None else condition(rule, reading, at))
    twin["health"] = health_part(conditions)


def condition(rule: health.Rule, reading: Mapping[str, Any], since: datetime) -> dict[str, Any]:
    """A condition raised by ``reading`` (its evidence), holding since ``since``."""
    evidence = {s: reading[s] for s in rule.evidence}
    return {
        "name": rule.name,
        "wheel": rule.wheel,
        "since": since,
        "evidence": evidence,
    }


def condition_key(condition: Mapping[str, Any]) -> str:
    """Which rule raised a condition: its name, and its wheel for a per-wheel rule (e.g.
    `tire_pressure_low_1_1`, health.Rule.key). Not stored: the two fields say it."""
    wheel = condition.get("wheel")
    return f"{condition['name']}_{wheel}" if wheel else str(condition["name"])


def health_part(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"status": "attention" if conditions else "ok", "conditions": conditions}


def reported_part(reading: Mapping[str, Any]) -> dict[str, Any]:
    """The twin's `reported` part: every sensor of its newest reading. Every reading carries
    every sensor, so their one time is the reading's (`last_reading.event_time`)."""
    return {s: {"value": reading[s]} for s in SENSORS}


@dataclass
class _Newest:
    """The newest reading folded so far by this call: the health rules compare each reading
    with it, and `reported` is written from it once, when the call ends."""

    record: Mapping[str, Any] | None = None


def _fold_reading(
    twin: Twin,
    record: Mapping[str, Any],
    window: int,
    result: FoldResult,
    newest: _Newest,
) -> None:
    at = ms_to_datetime(int(record["event_time"]))
    key = (int(record["event_time"]), int(record["seq"]))
    counters = twin["counters"]
    last = twin["last_reading"]
    last_key = (datetime_to_ms(last["event_time"]), int(last["seq"])) if last else None
    recent = recent_keys(twin)
    # The window only holds readings up to the reported one, so only those can be duplicates.
    if last_key is not None and key <= last_key and (key == last_key or key in recent):
        counters["duplicates_skipped"] += 1
        result.duplicates += 1
        return
    if last_key is not None and key < last_key:
        # Late: never overwrites newer values; remembered if it falls in the window.
        counters["late_skipped"] += 1
        result.late += 1
        index = bisect.bisect(recent, key)
        if index > 0 or len(recent) < window:
            recent.insert(index, key)
    else:
        previous = newest.record if newest.record is not None else previous_reading(twin)
        newest.record = record
        twin["last_reading"] = {"event_time": at, "seq": key[1]}
        _apply_health(twin, record, previous, at)
        recent.append(key)
        counters["readings_applied"] += 1
        counters["events_applied"] += 1
    twin["recent_readings"] = pack_keys(recent[-window:] if window > 0 else [])
    if twin["first_seen"] is None or at < twin["first_seen"]:
        twin["first_seen"] = at
    if twin["last_seen"] is None or at > twin["last_seen"]:
        twin["last_seen"] = at


def anomaly_part(
    record: Mapping[str, Any],
    recent: int,
    alarm: bool,
    since: datetime | None,
    reasons: list[str] | None,
) -> dict[str, Any]:
    """The twin's `anomaly` part: the newest score, and the car's verdict (ml/verdict.py).

    ``is_anomaly`` is the *car's* verdict (in alarm: RAISE_K of its last RAISE_N readings
    above the threshold, not yet cleared), ``anomalous_since`` when that alarm was raised and
    ``reasons`` the sensors named by the score that raised it; ``recent`` holds the newest
    readings' own flags as bits (bit 0: this score's reading); ``top_sensors`` maps the
    sensors driving this score to their contributions, largest first. (When it was scored
    stays in the event: no reader of the twin needs it.)"""
    return {
        "score": float(record["score"]),
        "threshold": float(record["threshold"]),
        "is_anomaly": alarm,
        "model_name": str(record["model_name"]),
        "model_version": str(record["model_version"]),
        "top_sensors": top_sensors(record),
        "event_time": ms_to_datetime(int(record["event_time"])),
        "seq": int(record["seq"]),
        "recent": recent,
        "anomalous_since": since if alarm else None,
        "reasons": reasons if alarm else None,
    }


def top_sensors(record: Mapping[str, Any]) -> dict[str, float]:
    """A score's sensors and contributions as one small map (half the bytes of a list of
    {sensor, contribution} pairs)."""
    return {str(t["sensor"]): float(t["contribution"]) for t in record["top_sensors"]}


def verdict_state(anomaly: Mapping[str, Any] | None) -> tuple[int, bool]:
    """(recent flags, in alarm) of a twin's anomaly part (a part from before the verdict rule
    starts calm with no flags)."""
    if anomaly is None or "recent" not in anomaly:
        return 0, False
    return int(anomaly["recent"]), bool(anomaly["is_anomaly"])


def _fold_score(twin: Twin, record: Mapping[str, Any], result: FoldResult) -> None:
    at = ms_to_datetime(int(record["event_time"]))
    key = (at, int(record["seq"]), str(record["model_version"]))
    counters = twin["counters"]
    current = twin["anomaly"]
    same_reading = False
    if current is not None:
        current_key = (current["event_time"], current["seq"], current["model_version"])
        if key == current_key:
            counters["duplicates_skipped"] += 1
            result.duplicates += 1
            return
        if key[:2] < current_key[:2]:
            counters["late_skipped"] += 1
            result.late += 1
            return
        same_reading = key[:2] == current_key[:2]  # the newest reading, another model version
    recent, was_alarm = verdict_state(current)
    step = verdict.rescore if same_reading else verdict.advance
    recent, alarm = step(recent, was_alarm, bool(record["is_anomaly"]))
    if alarm and not was_alarm:
        since, reasons = at, list(top_sensors(record))
    elif alarm:
        assert current is not None
        since, reasons = current["anomalous_since"], current.get("reasons")
    else:
        since, reasons = None, None
    twin["anomaly"] = anomaly_part(record, recent, alarm, since, reasons)
    counters["scores_applied"] += 1
    counters["events_applied"] += 1


def _fold_command(twin: Twin, record: Mapping[str, Any], result: FoldResult) -> None:
    """A command changes `desired` (see twin/desired.py), or is refused; either way its
    outcome goes with the result."""
    outcome = desired.fold_command(twin, record)
    if outcome is None:
        twin["counters"]["duplicates_skipped"] += 1
        result.duplicates += 1
    else:
        result.commands.append(outcome)
        twin["counters"]["events_applied"] += 1


#: Parts a twin had when it carried its own history and command log: dropped on its next write.
LEGACY_PARTS = ("history", "anomaly_history", "command_log")


def copy_for_update(twin: Twin) -> Twin:
    """A copy deep enough that folding never mutates the caller's document (and without the
    parts twins no longer have, so an existing fleet slims down as its cars report)."""
    copy = {key: value for key, value in twin.items() if key not in LEGACY_PARTS}
    copy["counters"] = dict(twin["counters"])
    copy["health"] = dict(twin["health"])
    copy["positions"] = [dict(p) for p in twin["positions"]]
    return copy


def fold(
    current: Twin | None,
    car_id: str,
    events: Iterable[Envelope],
    dedupe_window: int = DEFAULT_DEDUPE_WINDOW,
) -> FoldResult:
    """Fold one car's events (in Kafka order) into its twin; ``current`` is left untouched."""
    twin = copy_for_update(current) if current is not None else new_twin(car_id)
    twin.setdefault("car_id", car_id)  # twins from before the field get it on their next event
    positions = {(p["topic"], p["partition"]): p["offset"] for p in twin["positions"]}
    result = FoldResult(twin=None)
    newest = _Newest()
    for event in events:
        where = (event.topic, event.partition)
        if event.offset <= positions.get(where, -1):
            result.redelivered += 1
            continue
        positions[where] = event.offset
        if event.kind == "telemetry":
            _fold_reading(twin, event.record, dedupe_window, result, newest)
        elif event.kind == "command":
            _fold_command(twin, event.record, result)
        else:
            _fold_score(twin, event.record, result)
        twin["revision"] += 1
        result.applied += 1
    if result.applied == 0:
        return result
    if newest.record is not None:
        twin["reported"] = reported_part(newest.record)
    desired.refresh_delta(twin)  # desired vs reported, after every event of the batch
    twin["positions"] = [
        {"topic": topic, "partition": partition, "offset": offset}
        for (topic, partition), offset in sorted(positions.items())
    ]
    result.twin = twin
    return result


def position_of(twin: Twin, topic: str, partition: int) -> int:
    """The last offset of (topic, partition) applied to this twin, -1 if none."""
    for p in twin.get("positions", []):
        if p["topic"] == topic and p["partition"] == partition:
            return int(p["offset"])
    return -1
