"""The fold's fast path (columns, a car at a time) against the reference fold (an event at a
time): random streams of readings, scores and commands, cut into random chunks, give the same
twins after every chunk; and in-order chunks really take the fast path."""

from __future__ import annotations

import math
import random
from typing import Any

import bson
import pytest

from fleet.avro import anomaly_codec, command_codec, telemetry_codec
from fleet.contract import WHEELS
from tests.commands.factories import cmd
from tests.twin.factories import STEP, T0, reading, score
from twin.chunk import ChunkDecoder
from twin.events import Envelope, Kind
from twin.fold import Twin, fold
from twin.fold_columns import _fold_in_order, fold_car, judge_first_readings
from twin.project import Raw

TOPICS: dict[str, Kind] = {"telemetry": "telemetry", "scores": "anomaly", "commands": "command"}
CODECS = {"telemetry": telemetry_codec(), "scores": anomaly_codec(), "commands": command_codec()}
DECODER = ChunkDecoder({topic: (kind, CODECS[topic]) for topic, kind in TOPICS.items()})
CARS = ("car1", "car2", "car3")


def random_reading(rng: random.Random, car: str, seq: int, event_time: int) -> dict[str, Any]:
    """A reading that now and then trips (or cannot judge) each health rule."""
    sensors: dict[str, Any] = {}
    if rng.random() < 0.3:
        sensors[f"tire_pressure_{rng.choice(WHEELS)}"] = rng.choice([21, 22.5, 33])
    if rng.random() < 0.2:
        sensors[f"accelerometer_{rng.choice(WHEELS)}_value"] = rng.choice([-4.0, 3.5, 0.2])
    if rng.random() < 0.3:
        sensors["speed"] = rng.choice([0.0, 0.5, 30.0])
        sensors["engine_vibration_amplitude"] = rng.choice([100.0, 4500.0])
    if rng.random() < 0.3:
        sensors["coolant_temp"] = rng.choice([45.0, 80.0, 140.0, 60.0])
        sensors["current_draw"] = rng.choice([2.0, 20.0])
    if rng.random() < 0.1:
        sensors["control_unit_firmware"] = rng.choice([1000, 2000])
    return reading(car, seq=seq, event_time=event_time, **sensors)


def stream(rng: random.Random, disorder: bool) -> list[Raw]:
    """Messages of three cars in Kafka order: readings and their scores (in order, or with
    late and repeated ones, rescores by another model version, cars moving between two
    partitions and a few commands), now and then two readings at the same time or NaNs."""
    raws: list[Raw] = []
    offsets: dict[tuple[str, int], int] = {}

    def put(topic: str, record: dict[str, Any]) -> None:
        partition = rng.choice([0, 1]) if disorder else 0
        offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        key = record["car_id"].encode()
        value = CODECS[topic].encode(record)
        raws.append(Raw(topic, partition, offsets[(topic, partition)], key, value))

    times: dict[str, list[int]] = {car: [] for car in CARS}  # event time of each seq
    for _ in range(rng.randrange(20, 200)):
        car = rng.choice(CARS)
        seq = len(times[car])
        # A long gap says nothing about the coolant's rate; no gap: the same time, a new seq.
        gap = rng.choices([STEP, 200_000, 0], [0.9, 0.05, 0.05])[0]
        times[car].append((times[car][-1] if times[car] else T0) + gap)
        if disorder and seq > 2 and rng.random() < 0.15:
            seq = rng.randrange(seq - 2, seq + 1)  # late or repeated
        at = times[car][seq]
        record = random_reading(rng, car, seq, at)
        if rng.random() < 0.03:
            record[rng.choice(["coolant_temp", "speed", "current_draw"])] = math.nan
        put("telemetry", record)
        if rng.random() < 0.8:
            value = rng.choice([0.1, 0.2, 0.9, 1.5])
            put("scores", score(car, seq=seq, value=value, event_time=at, version="1"))
            if disorder and rng.random() < 0.05:  # the same reading scored by a new model
                put("scores", score(car, seq=seq, value=0.3, event_time=at, version="2"))
        if disorder and rng.random() < 0.03:
            put("commands", cmd(car=car, value=rng.choice([1000, 2000])))
    return raws


def reference(raws: list[Raw]) -> dict[str, list[Envelope]]:
    events: dict[str, list[Envelope]] = {}
    for raw in raws:
        kind = TOPICS[raw.topic]
        record = CODECS[raw.topic].decode(raw.value)
        events.setdefault(record["car_id"], []).append(
            Envelope(raw.topic, raw.partition, raw.offset, kind, record)
        )
    return events


def cuts(rng: random.Random, raws: list[Raw], seeks: bool = True) -> list[list[Raw]]:
    """The stream cut into random chunks; sometimes a chunk is delivered again (a redelivery),
    or a chunk holds part of the stream twice (a seek back within one poll)."""
    chunks, start = [], 0
    while start < len(raws):
        end = start + rng.randrange(1, 60)
        chunk = raws[start:end]
        if seeks and rng.random() < 0.1:
            chunk = chunk + raws[max(0, end - rng.randrange(1, 20)) : end]
        chunks.append(chunk)
        if rng.random() < 0.2:
            back = max(0, start - rng.randrange(1, 30))
            chunks.append(raws[back:end])
        start = end
    return chunks


def fold_both(
    twins: dict[str, tuple[Twin | None, Twin | None]], chunk: list[Raw], window: int
) -> None:
    decoded = DECODER.decode(chunk)
    expected = reference(chunk)
    assert set(decoded.cars) == set(expected)
    # As the projector does: the first readings judged for all cars at once, beside their
    # twins (a car whose first reading turns out to be a redelivery falls back to its own).
    current = {car: got for car, (_want, got) in twins.items() if got is not None}
    judge_first_readings(current, decoded.cars)
    for car, events in expected.items():
        want_before, got_before = twins.get(car, (None, None))
        want = fold(want_before, car, events, window)
        got = fold_car(got_before, car, decoded.cars[car], window)
        assert (got.applied, got.redelivered, got.late, got.duplicates) == (
            want.applied,
            want.redelivered,
            want.late,
            want.duplicates,
        )
        # As stored: the same fields in the same order with the same types (NaN included).
        assert bson.encode(got.twin or {}) == bson.encode(want.twin or {})
        twins[car] = (
            want.twin if want.twin is not None else want_before,
            got.twin if got.twin is not None else got_before,
        )


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("disorder", [False, True])
def test_the_fast_path_folds_like_the_reference(seed: int, disorder: bool) -> None:
    rng = random.Random(seed)
    twins: dict[str, tuple[Twin | None, Twin | None]] = {}
    window = rng.choice([1, 3, 50])
    for chunk in cuts(rng, stream(rng, disorder)):
        fold_both(twins, chunk, window)
    assert twins


def test_in_order_chunks_take_the_fast_path() -> None:
    rng = random.Random(7)
    twins: dict[str, Twin | None] = {}
    fast = 0
    for chunk in cuts(rng, stream(rng, disorder=False), seeks=False):
        decoded = DECODER.decode(chunk)
        for car, events in decoded.cars.items():
            result = _fold_in_order(twins.get(car), car, events, 5)
            assert result is not None
            fast += result.applied
            if result.twin is not None:
                twins[car] = result.twin
    assert fast > 0
    assert {t["health"]["status"] for t in twins.values() if t} <= {"ok", "attention"}


def test_a_late_reading_or_a_command_goes_to_the_reference_fold() -> None:
    first = [reading(seq=s) for s in (0, 1, 2)]
    raws = [
        Raw("telemetry", 0, i, b"car1", CODECS["telemetry"].encode(r)) for i, r in enumerate(first)
    ]
    twin = fold_car(None, "car1", DECODER.decode(raws).cars["car1"], 50).twin
    late = Raw("telemetry", 0, 3, b"car1", CODECS["telemetry"].encode(reading(seq=1)))
    events = DECODER.decode([late]).cars["car1"]
    assert _fold_in_order(twin, "car1", events, 50) is None
    folded = fold_car(twin, "car1", events, 50)
    assert folded.duplicates == 1
    command = Raw("commands", 0, 0, b"car1", CODECS["commands"].encode(cmd(value=1000)))
    assert not DECODER.decode([command]).cars["car1"].in_columns


def test_undecodable_messages_are_skipped_and_counted() -> None:
    good = Raw("telemetry", 0, 0, b"car1", CODECS["telemetry"].encode(reading(seq=0)))
    bad = Raw("telemetry", 0, 1, b"car1", b"\xc3\x01garbage")
    worse = Raw("scores", 0, 0, b"car1", b"")
    # Not UTF-8 in a string the fold does not keep: fastavro refuses it, and so do we.
    named = CODECS["scores"].encode(score(seq=0) | {"model_name": "abc"})
    not_utf8 = Raw("scores", 0, 1, b"car1", named.replace(b"abc", b"\xff\xfe\xfd"))
    decoded = DECODER.decode([good, bad, worse, not_utf8])
    assert decoded.undecodable == 3
    assert decoded.cars["car1"].raws == [good]
