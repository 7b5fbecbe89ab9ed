"""Batching without servers: chunks of whole cars and the adaptive poll size."""

from __future__ import annotations

import pytest

from twin.project import Raw, chunks_by_car
from twin.projector import FIRST_SECONDS_PER_TWIN, BatchSizer


def raw(car: str, offset: int) -> Raw:
    return Raw("t", 0, offset, car.encode(), b"")


def test_chunks_keep_each_car_whole_and_in_kafka_order() -> None:
    messages = [raw(f"car{i % 7}", i) for i in range(70)]
    chunks = list(chunks_by_car(messages, max_cars=3, max_events=1000))
    assert [len({m.key for m in chunk}) for chunk in chunks] == [3, 3, 1]
    seen: dict[bytes, list[int]] = {}
    for number, chunk in enumerate(chunks):
        for m in chunk:
            seen.setdefault(m.key, []).append(number)
        for key in {m.key for m in chunk}:
            offsets = [m.offset for m in chunk if m.key == key]
            assert offsets == sorted(offsets)
    assert all(len(set(where)) == 1 for where in seen.values())  # never split across chunks
    assert sorted(m.offset for chunk in chunks for m in chunk) == list(range(70))


def test_chunks_are_cut_by_events_too_but_never_inside_a_car() -> None:
    messages = [raw("big", i) for i in range(50)] + [raw(f"c{i}", 100 + i) for i in range(30)]
    chunks = list(chunks_by_car(messages, max_cars=500, max_events=20))
    assert len(chunks[0]) == 50  # one car larger than the bound stays whole
    assert all(len(chunk) <= 20 for chunk in chunks[1:])
    assert sum(len(chunk) for chunk in chunks) == 80


def test_batches_touch_as_many_cars_as_fit_in_batch_seconds_at_the_measured_cost() -> None:
    sizer = BatchSizer(batch_seconds=60)
    assert sizer.max_cars() == int(60 / FIRST_SECONDS_PER_TWIN)  # before any measurement
    sizer.observe(twins=1000, seconds=2.0)  # 2 ms a twin: the estimate moves halfway there
    assert sizer.seconds_per_twin == (FIRST_SECONDS_PER_TWIN + 0.002) / 2
    for _ in range(20):
        sizer.observe(twins=1000, seconds=2.0)
    assert sizer.max_cars() == pytest.approx(30_000, rel=0.01)
    sizer.observe(twins=5, seconds=100.0)  # too few twins to say anything
    assert sizer.max_cars() == pytest.approx(30_000, rel=0.01)
    for _ in range(20):
        sizer.observe(twins=100, seconds=120.0)  # a slow server: fewer cars per batch
    assert sizer.max_cars() == 50


def test_caught_up_a_batch_is_what_can_be_written_within_the_staleness_target() -> None:
    sizer = BatchSizer(batch_seconds=180, max_staleness=1.0)
    for _ in range(20):
        sizer.observe(twins=1000, seconds=1.0)  # 1 ms a twin
    assert sizer.max_cars() == pytest.approx(180_000, rel=0.01)  # a start is a catch-up
    sizer.polled(events=300, cars=300, max_events=500_000, max_cars=180_000)  # all there was
    assert not sizer.behind
    assert sizer.max_cars() == pytest.approx(1_000, rel=0.01)  # freshness first
    sizer.polled(events=5_000, cars=1_000, max_events=500_000, max_cars=1_000)  # more waiting
    assert sizer.behind
    assert sizer.max_cars() == pytest.approx(180_000, rel=0.01)  # catch up in big batches
    sizer.polled(events=500_000, cars=10, max_events=500_000, max_cars=180_000)
    assert sizer.behind  # the event bound stopped it: still behind
