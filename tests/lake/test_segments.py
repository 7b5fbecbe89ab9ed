"""The rotation rules: cuts depend on the records only, so a replay rebuilds the same objects."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from lake.naming import HOUR_MS, hour_of
from lake.segments import PartitionSegmenter, Rules, Segment
from tests.lake.helpers import T0

Rec = tuple[int, int, bytes, bytes]  # offset, event time, car, payload


def stream(n: int, step_ms: int = 1000, start: int = 0) -> list[Rec]:
    return [(start + i, T0 + i * step_ms, f"car-{i % 3}".encode(), b"x" * 10) for i in range(n)]


def feed(rules: Rules, records: list[Rec]) -> tuple[list[Segment], PartitionSegmenter]:
    seg = PartitionSegmenter(0, rules)
    closed: list[Segment] = []
    for offset, t, car, payload in records:
        closed += seg.add(offset, t, car, payload)
    return closed, seg


def shape(segments: list[Segment]) -> list[tuple[int, int, str, list[tuple[int, int, int]]]]:
    return [
        (
            s.start,
            s.end,
            s.reason,
            sorted((f.hour, f.first_offset, len(f.payloads)) for f in s.files.values()),
        )
        for s in segments
    ]


def test_count_rule_cuts_after_max_records() -> None:
    closed, seg = feed(Rules(max_records=4), stream(10))
    assert [(s.start, s.end, s.reason) for s in closed] == [(0, 4, "count"), (4, 8, "count")]
    assert seg.open is not None and (seg.open.start, seg.open.count) == (8, 2)


def test_bytes_rule_cuts_when_payload_bytes_reach_the_cap() -> None:
    closed, _ = feed(Rules(max_bytes=25), stream(7))  # 10-byte payloads: cut after 3
    assert [(s.start, s.end, s.reason, s.size) for s in closed] == [
        (0, 3, "bytes", 30),
        (3, 6, "bytes", 30),
    ]


def test_window_rule_cuts_before_the_first_record_of_a_newer_hour() -> None:
    records = stream(6, step_ms=20 * 60_000)  # 00:00, 00:20, 00:40, 01:00, 01:20, 01:40
    closed, seg = feed(Rules(), records)
    assert shape(closed) == [(0, 3, "window", [(hour_of(T0), 0, 3)])]
    assert seg.open is not None and seg.open.start == 3


def test_grace_keeps_early_records_of_the_next_hour_in_the_segment_as_their_own_file() -> None:
    records = stream(6, step_ms=20 * 60_000)
    closed, _ = feed(Rules(grace_ms=25 * 60_000), records)
    h = hour_of(T0)
    # Windows run from :25 to :25: 00:40 starts a window holding 01:00 and 01:20 as a second
    # hour file; 01:40 cuts.
    assert shape(closed) == [
        (0, 2, "window", [(h, 0, 2)]),
        (2, 5, "window", [(h, 2, 1), (h + 1, 3, 2)]),
    ]


def test_late_events_go_to_their_own_hour_file_and_never_cut() -> None:
    records = [
        (0, T0 + 2 * HOUR_MS, b"a", b"p"),
        (1, T0 + 2 * HOUR_MS + 5, b"b", b"p"),
        (2, T0 + 10, b"late", b"p"),  # two hours late
        (3, T0 + 2 * HOUR_MS + 9, b"a", b"p"),
        (4, T0 + HOUR_MS + 1, b"late", b"p"),
        (5, T0 + 3 * HOUR_MS, b"a", b"p"),  # newer hour: cut before
    ]
    closed, _ = feed(Rules(), records)
    h = hour_of(T0)
    assert shape(closed) == [(0, 5, "window", [(h, 2, 1), (h + 1, 4, 1), (h + 2, 0, 3)])]
    assert closed[0].files[h].cars == {b"late"}


def test_flush_cuts_the_open_segment_at_the_end_of_the_log_only() -> None:
    _, seg = feed(Rules(), stream(3))
    with pytest.raises(ValueError):
        seg.flush(2)
    flushed = seg.flush(5)
    assert flushed is not None and (flushed.start, flushed.end, flushed.reason) == (0, 5, "flush")
    assert seg.open is None and seg.flush(9) is None


def messy_stream(n: int, seed: int) -> list[Rec]:
    """Mostly in-order events across hours, with late ones and offset gaps."""
    rng = random.Random(seed)
    out: list[Rec] = []
    offset = 0
    for i in range(n):
        t = T0 + i * 30_000
        if rng.random() < 0.1:
            t -= rng.choice([1, 2, 5]) * HOUR_MS
        offset += 1 if rng.random() < 0.95 else 3
        out.append((offset, t, f"car-{rng.randrange(20)}".encode(), bytes(rng.randrange(5, 40))))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_replay_from_any_commit_point_rebuilds_identical_segments(seed: int) -> None:
    rules = Rules(max_records=37, max_bytes=700)
    records = messy_stream(600, seed)
    closed, _ = feed(rules, records)
    reasons = {s.reason for s in closed}
    assert "window" in reasons and reasons & {"count", "bytes"}
    # Every record is in exactly one file.
    assert sorted(p for s in closed for f in s.files.values() for p in f.payloads) == sorted(
        r[3] for r in records[: sum(s.count for s in closed)]
    )
    for k in range(len(closed)):
        commit = closed[k].end
        replayed, _ = feed(rules, [r for r in records if r[0] >= commit])
        assert shape(replayed) == shape(closed[k + 1 :])


def test_a_flush_then_crash_is_overwritten_by_a_superset_with_the_same_names() -> None:
    """The argument in lake.segments: a replay past a flushed but uncommitted segment."""
    rules = Rules(max_records=50)
    records = [(o, t, car, f"{o}".encode()) for o, t, car, _ in messy_stream(300, 7)]
    store: dict[tuple[int, int], list[bytes]] = {}  # (hour, first offset) -> object content

    def upload(segments: list[Segment]) -> None:
        for s in segments:
            for f in s.files.values():
                store[(f.hour, f.first_offset)] = list(f.payloads)  # overwrite by name

    # Run 1 reads to record 120 (the end of the log then), uploads what it closed and commits,
    # then flushes the tail, uploads it, and is killed before committing the flush.
    run1, seg = feed(rules, records[:120])
    upload(run1)
    commit = run1[-1].end
    flushed = seg.flush(records[119][0] + 1)
    assert flushed is not None and flushed.count > 0
    upload([flushed])
    # Run 2 replays from the commit, with more data in the log by now.
    run2, seg2 = feed(rules, [r for r in records if r[0] >= commit])
    upload(run2)
    tail = seg2.flush(records[-1][0] + 1)
    assert tail is not None
    upload([tail])
    archived = sorted(p for content in store.values() for p in content)
    assert archived == sorted(r[3] for r in records)  # each record exactly once


def feed_in_batches(
    rules: Rules, records: list[Rec], rng: random.Random
) -> tuple[list[Segment], PartitionSegmenter]:
    seg = PartitionSegmenter(0, rules)
    closed: list[Segment] = []
    i = 0
    while i < len(records):
        j = min(len(records), i + rng.choice([1, 2, 7, 50, 300]))
        chunk = records[i:j]
        closed += seg.add_batch(
            np.array([r[0] for r in chunk], np.int64),
            np.array([r[1] for r in chunk], np.int64),
            [r[2] for r in chunk],
            [r[3] for r in chunk],
        )
        i = j
    return closed, seg


def full_shape(segments: list[Segment]) -> list[Any]:
    return [
        (
            s.start,
            s.end,
            s.reason,
            s.count,
            s.size,
            sorted(
                (f.hour, f.first_offset, f.payloads, sorted(f.cars), f.min_time, f.max_time)
                for f in s.files.values()
            ),
        )
        for s in segments
    ]


@pytest.mark.parametrize("seed", range(8))
def test_batches_cut_exactly_where_single_records_do_whatever_the_poll_boundaries(
    seed: int,
) -> None:
    rng = random.Random(seed)
    rules = Rules(
        max_records=rng.choice([5, 37, 10_000]),
        max_bytes=rng.choice([60, 700, 10**9]),
        window_ms=rng.choice([HOUR_MS, 15 * 60_000]),
        grace_ms=rng.choice([0, 120_000]),
    )
    records = [(o, t, c, f"{o}:".encode() + p) for o, t, c, p in messy_stream(800, seed)]
    one_by_one, seg1 = feed(rules, records)
    batched, seg2 = feed_in_batches(rules, records, rng)
    assert full_shape(batched) == full_shape(one_by_one)
    assert full_shape([seg2.open] if seg2.open else []) == full_shape(
        [seg1.open] if seg1.open else []
    )
