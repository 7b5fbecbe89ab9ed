"""The number of twins, kept fresh in the background for the life of the explorer process.

Counting the twins is the one fleet-wide figure no index answers: MongoDB reads it from
collection metadata, but SecantusDB walks every document (1.7 s with 100,000 twins). It
changes only when cars join, so every page reads the last count at once, and a count older
than ``max_age`` is refreshed by a background thread while pages keep showing the previous
one (stale-while-revalidate); only the very first count of a database is waited for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ui.twin_reads import Where

log = logging.getLogger(__name__)


@dataclass
class _Count:
    value: int
    at: float  # time.monotonic() when it was counted
    refreshing: bool = False


_counts: dict[Where, _Count] = {}
_first: dict[Where, threading.Lock] = {}
_guard = threading.Lock()


def latest(key: Where, count: Callable[[], int], max_age: float) -> int:
    """The last count of ``key``'s twins (``count()`` counts them), at most about ``max_age``
    seconds old plus one count's time; the first one is counted here, errors included."""
    with _guard:
        known = _counts.get(key)
        if known is not None and not known.refreshing and time.monotonic() - known.at > max_age:
            known.refreshing = True
            threading.Thread(
                target=_refresh, args=(key, count), name="fleet-size", daemon=True
            ).start()
    if known is not None:
        return known.value
    with _guard:
        first = _first.setdefault(key, threading.Lock())
    with first:  # one first count per key: who comes later waits for it, not counts again
        if key not in _counts:
            value = count()
            with _guard:
                _counts[key] = _Count(value, time.monotonic())
        return _counts[key].value


def _refresh(key: Where, count: Callable[[], int]) -> None:
    try:
        value = count()
    except Exception as exc:  # the previous count stays; the pages report a failing server
        log.warning("fleet size not refreshed: %s", exc)
        with _guard:
            if (known := _counts.get(key)) is not None:  # (unless forgotten meanwhile)
                known.refreshing = False
        return
    with _guard:
        _counts[key] = _Count(value, time.monotonic())


def forget() -> None:
    """Drop every count (a test or benchmark that wants a fresh process's first render)."""
    with _guard:
        _counts.clear()
        _first.clear()
