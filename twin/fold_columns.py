"""The fold's fast path: a car's in-order readings and scores folded from columns in one step.

`twin.fold.fold` is the reference: it takes a car's events one at a time. In the common case
(every new reading newer than the last, every new score newer than the last, no command) its
result has a closed form, computed here per car with numpy and a handful of dicts, whatever
the number of events: counters add up, the window of reading identities keeps its newest, a
health condition holds since the start of its last run of verdicts that hold, and the anomaly
part is the newest score's, with the car's verdict stepped once per score (ml/verdict.py).
Anything else goes to the reference fold. Both give the same twin
(tests/twin/test_fold_columns.py folds random streams both ways).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.contract import SENSORS
from ml import verdict as car_verdict
from twin import desired, health
from twin.chunk import CarEvents, Chunk, Columns
from twin.events import datetime_to_ms, ms_to_datetime
from twin.fold import (
    KEY_BYTES,
    FoldResult,
    Twin,
    anomaly_part,
    condition,
    condition_key,
    copy_for_update,
    fold,
    health_part,
    new_twin,
    pack_keys,
    previous_reading,
    reported_part,
    top_sensors,
    verdict_state,
)
from twin.project import Raw

Rows = npt.NDArray[np.intp]


def judge_first_readings(twins: Mapping[str, Twin], cars: Mapping[str, CarEvents]) -> None:
    """Judge each car's first reading of a chunk beside its twin's reported reading, for all
    the cars at once: in live operation a car has one reading per batch, and these rules
    (`uses_previous`) would otherwise run once per car on arrays of one value. `fold_car`
    takes the verdicts from `CarEvents.first_judged`."""
    judged = [(car, e) for car, e in cars.items() if e.in_columns and e.readings]
    if not judged:
        return
    chunk = judged[0][1].chunk
    rows = np.array([e.readings[0] for _car, e in judged], np.intp)
    previous = [previous_reading(twins[car]) if car in twins else None for car, _e in judged]
    now = {name: chunk.readings[name][rows] for name in health.FIELDS}
    before = {
        name: np.array([p[name] if p is not None else now[name][i] for i, p in enumerate(previous)])
        for name in health.FIELDS
    }
    readings = health.Readings(now, before, np.array([p is not None for p in previous]))
    verdicts = chunk.verdicts[rows]
    for j, rule in enumerate(health.RULES):
        if rule.uses_previous:
            verdicts[:, j] = rule.check(readings)
    for i, (_car, events) in enumerate(judged):
        events.first_judged = (int(rows[i]), verdicts[i])


def fold_car(current: Twin | None, car_id: str, events: CarEvents, window: int) -> FoldResult:
    """Fold one car's events of a chunk into its twin (``current`` is left untouched);
    ``window``: reading identities the twin remembers (``fold``'s ``dedupe_window``)."""
    if events.in_columns:
        folded = _fold_in_order(current, car_id, events, window)
        if folded is not None:
            return folded
    return fold(current, car_id, events.envelopes(), window)


def _fold_in_order(
    current: Twin | None, car_id: str, events: CarEvents, window: int
) -> FoldResult | None:
    """The fast path, or None when these events are not the common case."""
    stored = current["positions"] if current is not None else []
    positions = {(p["topic"], p["partition"]): p["offset"] for p in stored}
    chunk = events.chunk
    readings, reading_redelivered = _fresh(events.readings, chunk.reading_raws, positions)
    scores, score_redelivered = _fresh(events.scores, chunk.score_raws, positions)
    if readings is None or scores is None:
        return None  # a partition's offsets go back within the chunk (a seek): one at a time
    if readings.tolist() != events.readings[len(events.readings) - len(readings) :]:
        return None  # redelivered readings between new ones (a car on two partitions)
    if not _newer(chunk.readings, readings, _last_reading_key(current)):
        return None
    if not _newer(chunk.scores, scores, _last_score_key(current)):
        return None
    result = FoldResult(twin=None, redelivered=reading_redelivered + score_redelivered)
    result.applied = len(readings) + len(scores)
    if result.applied == 0:
        return result
    twin = copy_for_update(current) if current is not None else new_twin(car_id)
    twin.setdefault("car_id", car_id)  # twins from before the field get it on their next event
    if len(readings):
        _fold_readings(twin, chunk, readings, window, events.first_judged)
    if len(scores):
        _fold_scores(twin, events, scores)
    twin["revision"] += result.applied
    for raws, rows in ((chunk.reading_raws, readings), (chunk.score_raws, scores)):
        for row in rows.tolist():  # in Kafka order per partition: the last one wins
            raw = raws[row]
            positions[(raw.topic, raw.partition)] = raw.offset
    desired.refresh_delta(twin)
    twin["positions"] = [
        {"topic": topic, "partition": partition, "offset": offset}
        for (topic, partition), offset in sorted(positions.items())
    ]
    result.twin = twin
    return result


def _fresh(
    rows: list[int], raws: list[Raw], positions: dict[tuple[str, int], int]
) -> tuple[Rows | None, int]:
    """The rows not applied before (offset past the twin's position), and how many were;
    None if some partition's offsets do not increase."""
    fresh: list[int] = []
    last: dict[tuple[str, int], int] = {}
    redelivered = 0
    for row in rows:
        raw = raws[row]
        where = (raw.topic, raw.partition)
        if raw.offset <= last.get(where, -1):
            return None, 0
        last[where] = raw.offset
        if raw.offset <= positions.get(where, -1):
            redelivered += 1
        else:
            fresh.append(row)
    return np.asarray(fresh, np.intp), redelivered


def _newer(columns: Columns, rows: Rows, after: tuple[int, int] | None) -> bool:
    """Whether (event time, seq) strictly increases along the rows, starting after ``after``."""
    if not len(rows):
        return True
    times, seqs = columns["event_time"][rows], columns["seq"][rows]
    if after is not None and (int(times[0]), int(seqs[0])) <= after:
        return False
    later = times[1:] > times[:-1]
    tied = times[1:] == times[:-1]
    return bool(np.all(later | (tied & (seqs[1:] > seqs[:-1]))))


def _last_reading_key(twin: Twin | None) -> tuple[int, int] | None:
    last = twin["last_reading"] if twin is not None else None
    return None if last is None else (datetime_to_ms(last["event_time"]), int(last["seq"]))


def _last_score_key(twin: Twin | None) -> tuple[int, int] | None:
    last = twin.get("anomaly") if twin is not None else None
    return None if last is None else (datetime_to_ms(last["event_time"]), int(last["seq"]))


def _sensors(chunk: Chunk, row: int) -> dict[str, Any]:
    return dict(zip(SENSORS, chunk.sensor_values[row], strict=True))


def _fold_readings(
    twin: Twin,
    chunk: Chunk,
    rows: Rows,
    window: int,
    first_judged: tuple[int, npt.NDArray[np.int8]] | None,
) -> None:
    columns = chunk.readings
    _fold_health(twin, chunk, rows, first_judged)
    kept = rows[-window:] if window > 0 else rows[:0]
    # Every new reading is newer than the remembered ones (the fast path's premise): append
    # their packed identities and keep the newest `window` (bytes, as fold.pack_keys makes).
    times, seqs = columns["event_time"][kept].tolist(), columns["seq"][kept].tolist()
    new = pack_keys(list(zip(times, seqs, strict=True)))
    packed = bytes(twin.get("recent_readings") or b"") + new
    twin["recent_readings"] = packed[-window * KEY_BYTES :] if window > 0 else b""
    first, last = (ms_to_datetime(int(columns["event_time"][rows[i]])) for i in (0, -1))
    twin["last_reading"] = {"event_time": last, "seq": int(columns["seq"][rows[-1]])}
    twin["reported"] = reported_part(_sensors(chunk, int(rows[-1])))
    counters = twin["counters"]
    counters["readings_applied"] += len(rows)
    counters["events_applied"] += len(rows)
    if twin["first_seen"] is None or first < twin["first_seen"]:
        twin["first_seen"] = first
    if twin["last_seen"] is None or last > twin["last_seen"]:
        twin["last_seen"] = last


def _fold_health(
    twin: Twin, chunk: Chunk, rows: Rows, first_judged: tuple[int, npt.NDArray[np.int8]] | None
) -> None:
    """The rules' verdicts on these readings, judged with the chunk (the first one again
    beside the twin's reported reading). A condition that holds after them holds since the
    first reading of its last run (readings that cannot tell extend a run), or since before
    them if the run began earlier; it is raised by that reading."""
    verdicts = chunk.verdicts[rows]
    first = int(rows[0])
    if first_judged is not None and first_judged[0] == first:
        verdicts[0] = first_judged[1]
    else:
        verdicts[0] = _judge_beside_twin(twin, chunk, first, verdicts[0])
    if len(rows) == 1:  # the live regime: plain Python beats numpy on one row
        _health_after_one(twin, chunk, first, verdicts[0].tolist())
        return
    index = np.arange(len(rows))[:, None]
    last_known = np.where(verdicts != health.UNKNOWN, index, -1).max(axis=0).tolist()
    last_clear = np.where(verdicts == health.CLEAR, index, -1).max(axis=0)
    onsets = ((verdicts == health.HOLDS) & (index > last_clear)).argmax(axis=0).tolist()
    final = verdicts[np.maximum(last_known, 0), np.arange(len(health.RULES))].tolist()
    cleared = (last_clear >= 0).tolist()
    active = {condition_key(c): c for c in twin["health"]["conditions"]}
    conditions = []
    for j, rule in enumerate(health.RULES):
        held = active.get(rule.key)
        if last_known[j] < 0:  # these readings cannot tell: keep what we knew
            if held is not None:
                conditions.append(held)
        elif final[j] == health.CLEAR:
            continue
        elif not cleared[j] and held is not None:
            conditions.append(held)
        else:
            onset = int(rows[onsets[j]])
            since = ms_to_datetime(int(chunk.readings["event_time"][onset]))
            conditions.append(condition(rule, _sensors(chunk, onset), since))
    twin["health"] = health_part(conditions)


def _judge_beside_twin(
    twin: Twin, chunk: Chunk, row: int, verdicts: npt.NDArray[np.int8]
) -> npt.NDArray[np.int8]:
    """One reading's verdicts with the rules that compare it with the reading before judged
    beside the twin's reported reading (one car: `judge_first_readings` does many at once)."""
    now = {name: chunk.readings[name][row : row + 1] for name in health.FIELDS}
    previous = previous_reading(twin)
    if previous is None:
        readings = health.Readings(now, now, np.zeros(1, bool))
    else:
        before = {name: np.array([previous[name]]) for name in health.FIELDS}
        readings = health.Readings(now, before, np.ones(1, bool))
    judged = verdicts.copy()
    for j, rule in enumerate(health.RULES):
        if rule.uses_previous:
            judged[j] = rule.check(readings)[0]
    return judged


def _health_after_one(twin: Twin, chunk: Chunk, row: int, verdicts: list[int]) -> None:
    """`_fold_health`'s rule for a single reading: a condition that holds stays as it was, or
    is raised by this reading; one that is clear goes; one it cannot tell about stays."""
    active = {condition_key(c): c for c in twin["health"]["conditions"]}
    conditions = []
    for rule, verdict in zip(health.RULES, verdicts, strict=True):
        held = active.get(rule.key)
        if verdict == health.HOLDS and held is None:
            since = ms_to_datetime(int(chunk.readings["event_time"][row]))
            held = condition(rule, _sensors(chunk, row), since)
        if verdict != health.CLEAR and held is not None:
            conditions.append(held)
    twin["health"] = health_part(conditions)


def _fold_scores(twin: Twin, events: CarEvents, rows: Rows) -> None:
    """Every score is newer than the last (the fast path's premise): each steps the car's
    verdict as `fold._fold_score` does; only the newest record, and the one that raised the
    alarm if it was raised here, are decoded."""
    chunk = events.chunk
    flags = chunk.scores["is_anomaly"][rows].tolist()
    held = twin["anomaly"]
    recent, alarm = verdict_state(held)
    was_alarm, raised_at = alarm, -1
    for i, flag in enumerate(flags):
        recent, now = car_verdict.advance(recent, alarm, flag)
        if now and not alarm:
            raised_at = i
        alarm = now
    if not alarm:
        since, reasons = None, None
    elif raised_at >= 0:
        raiser = _decode(chunk, int(rows[raised_at]))
        since = ms_to_datetime(int(raiser["event_time"]))
        reasons = list(top_sensors(raiser))
    else:
        assert was_alarm and held is not None
        since, reasons = held["anomalous_since"], held.get("reasons")
    record = _decode(chunk, int(rows[-1]))
    twin["anomaly"] = anomaly_part(record, recent, alarm, since, reasons)
    counters = twin["counters"]
    counters["scores_applied"] += len(rows)
    counters["events_applied"] += len(rows)


def _decode(chunk: Chunk, row: int) -> dict[str, Any]:
    raw = chunk.score_raws[row]
    record: dict[str, Any] = chunk.codecs[raw.topic][1].decode(raw.value)
    return record
