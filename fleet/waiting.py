"""Wait for a condition with a deadline: the only way this project waits (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    pass


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.1,
    fatal: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    Exceptions from ``condition`` count as "not yet" (the last one is chained to the
    DeadlineExceeded raised after ``timeout`` seconds), except those in ``fatal``, which end
    the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except fatal:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"timed out after {timeout:.0f}s waiting for {what}") from (
                last_error
            )
        time.sleep(interval)
