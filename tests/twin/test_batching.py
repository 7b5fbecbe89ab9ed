"""Batching without servers: chunks of whole cars and the adaptive poll size."""

from __future__ import annotations

from twin.project import Raw, chunks_by_car
from twin.projector import INITIAL_LIMIT, next_limit


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


def test_the_poll_size_grows_when_batches_are_quick_and_shrinks_when_slow() -> None:
    grown = next_limit(INITIAL_LIMIT, INITIAL_LIMIT, 1.0, batch_size=200_000, batch_seconds=60)
    assert grown == 4 * INITIAL_LIMIT  # at most 4x per batch
    assert next_limit(160_000, 160_000, 1.0, 200_000, 60) == 200_000  # capped by batch_size
    assert next_limit(100_000, 100_000, 120.0, 200_000, 60) == 50_000  # fits in 60 s
    assert next_limit(20_000, 20_000, 600.0, 200_000, 60) == INITIAL_LIMIT  # the floor
    assert next_limit(40_000, 123, 5.0, 200_000, 60) == 40_000  # partial batch: caught up
    assert next_limit(10, 10, 0.1, batch_size=10, batch_seconds=60) == 10
