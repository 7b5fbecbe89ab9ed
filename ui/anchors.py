"""Where the table's unfiltered first pages start reading: a remembered or guessed anchor.

A first page of the whole fleet (by id, score or last seen, no filter) has nowhere to start
but the whole index range, and a server that reads a range whole before it applies ``limit``
(SecantusDB) then reads every twin: about 20 s with 100,000 twins. Given an *anchor*, a row
of the list, a first page reads up to it and widens past it instead
(`twin_reads.first_id_windows`, `twin_reads.page_queries`), which costs about what lies
before the anchor. Any row is a valid anchor, so a poor one costs time, never rows.

- A first page's last row is remembered as its anchor for the life of the process.
- By car id, before any is remembered, the anchor is `guess`ed from a sample of the fleet's
  ids: the cars of the newest readings in Kafka, which the explorer reads anyway for the
  fleet clock. Without a sample (Kafka away or empty), and by score or last seen, the first
  first page in a process reads the whole range.
- One reader per anchor at a time (`first_page`): a request that arrives while another one
  is learning the same anchor waits for it, then reads from the anchor, instead of starting a
  second whole-fleet read on a busy server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ui import twin_reads
from ui.twin_reads import Cursor, TableQuery, Twins

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (server, database, collection)
AnchorKey = tuple[Key, str, str, bool]  # (where, search prefix, sort, reverse)
#: Bounded: past this many, all are forgotten (each is only a hint).
MOST_ANCHORS = 1024
ANCHORS: dict[AnchorKey, Cursor] = {}
_guard = threading.Lock()
_learning: dict[AnchorKey, threading.Lock] = {}


def anchor_key(where: Key, query: TableQuery) -> AnchorKey:
    return (where, query.search.strip(), query.sort, query.reverse)


def guess(car_ids: Iterable[str], query: TableQuery) -> Cursor | None:
    """An anchor for a first page by car id, from a sample of the fleet's ids (the cars of the
    newest readings in Kafka): the sampled id nearest the start of the order. With n ids
    sampled from a fleet of N, about N / n cars lie before it, so the first page reads about
    that many (100,000 cars, 1,200 sampled: ~80) instead of all of them."""
    if twin_reads.SORTABLE[query.sort][0] != "_id":
        return None
    prefix = query.search.strip()
    ids = [car for car in car_ids if car.startswith(prefix)]
    if not ids:
        return None
    pick = max(ids) if query.reverse else min(ids)
    return (pick, pick)


def first_page(
    twins: Twins,
    where: Key,
    query: TableQuery,
    clock: Any,
    sample: Callable[[], Iterable[str]] = tuple,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """A first page (``query.after`` is None), read from its anchor when one is known;
    otherwise from one `guess`ed from ``sample()`` (car ids), or the whole range; then its
    last row is remembered as the anchor (one reader per anchor at a time)."""
    key = anchor_key(where, query)
    if key in ANCHORS:
        return twin_reads.table_page(twins, query, clock, ANCHORS.get(key))
    with _guard:
        lock = _learning.setdefault(key, threading.Lock())
    with lock:  # whoever came first learns it; the others then read from what it learned
        anchor = ANCHORS.get(key) or guess(sample(), query)
        rows, last = twin_reads.table_page(twins, query, clock, anchor)
        with _guard:
            if last is not None and len(rows) == query.page_size:
                if len(ANCHORS) >= MOST_ANCHORS:
                    ANCHORS.clear()
                ANCHORS[key] = last
            _learning.pop(key, None)  # waiters hold the lock itself; later callers the anchor
    return rows, last
