"""The explorer's fleet count: counted once, then refreshed in the background when old, while
pages keep reading the previous count (a pure unit test: the count is any callable)."""

from __future__ import annotations

import threading

import pytest

from fleet.waiting import wait_for
from ui import fleet_count

KEY = ("mongodb://example", "db", "twins")


@pytest.fixture(autouse=True)
def fresh() -> None:
    fleet_count.forget()


class Counter:
    """A count that returns the current fleet size and records each call; ``gate`` holds a
    refresh back until the test lets it through."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self) -> int:
        self.calls += 1
        self.gate.wait(timeout=10)
        return self.size


def test_first_count_is_waited_for_then_reused_while_fresh() -> None:
    count = Counter(100)
    assert fleet_count.latest(KEY, count, max_age=60) == 100
    count.size = 101
    assert fleet_count.latest(KEY, count, max_age=60) == 100  # fresh: not counted again
    assert count.calls == 1


def test_an_old_count_is_served_while_one_refresh_runs_in_the_background() -> None:
    count = Counter(100)
    fleet_count.latest(KEY, count, max_age=0)
    count.size, count.gate = 250, threading.Event()  # the next count waits for the gate
    assert fleet_count.latest(KEY, count, max_age=0) == 100  # old value at once
    assert fleet_count.latest(KEY, count, max_age=0) == 100  # still refreshing: no second one
    assert count.calls == 2
    count.gate.set()
    wait_for(lambda: fleet_count.latest(KEY, count, max_age=60) == 250, 10, "the new count")


def test_a_failed_refresh_keeps_the_old_count_and_tries_again() -> None:
    calls: list[int] = []

    def failing() -> int:
        calls.append(1)
        raise ConnectionError("server away")

    fleet_count.latest(KEY, lambda: 7, max_age=60)
    assert fleet_count.latest(KEY, failing, max_age=0) == 7
    wait_for(lambda: len(calls) == 1, 10, "the failed refresh")

    def later_page() -> bool:  # the old count at once, and (once the last one ended) a retry
        assert fleet_count.latest(KEY, failing, max_age=0) == 7
        return len(calls) >= 2

    wait_for(later_page, 10, "a second refresh", fatal=(AssertionError,))


def test_pages_asking_at_once_share_the_first_count() -> None:
    count = Counter(42)
    count.gate.clear()  # the first count takes a while
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda: answers.append(fleet_count.latest(KEY, count, 60)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: count.calls == 1, 10, "the first count to start")
    count.gate.set()
    for thread in threads:
        thread.join(timeout=10)
    assert answers == [42, 42, 42]
    assert count.calls == 1
