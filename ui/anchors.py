"""Where the table's unfiltered first pages end, learned once per explorer process.

A first page of the whole fleet (by id, score or last seen, no filter) has nowhere to start
but the whole index range, and a server that reads a range whole before it applies ``limit``
(SecantusDB) then reads every twin once: about 20 s with 100,000 twins. Its last row is then
remembered as the page's *anchor*, and later first pages read up to it and widen past it
(`twin_reads.first_id_windows`, `twin_reads.page_queries`): milliseconds. Any row is a valid
anchor, so a stale one costs time, never rows.

Two things keep that one slow read off a user's path:
- `learn` finds the anchor of the table's default order (all cars by id); the explorer runs
  it in a background thread as soon as it starts (`ui.cached.warm_up`), so users find it;
- one read per anchor at a time (`first_page`): a request that arrives while another request
  or the warm-up is learning the same anchor waits for it and then reads from the anchor,
  instead of starting a second whole-fleet read on a busy server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from ui import twin_reads
from ui.twin_reads import Cursor, TableQuery, Twins

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (server, database, collection)
AnchorKey = tuple[Key, str, str, bool]  # (where, search prefix, sort, reverse)
#: Bounded: past this many, all are forgotten (each is only a hint).
MOST_ANCHORS = 1024
#: The first pages the start-up warm-up anchors: the one the fleet table opens on (all cars
#: by id). Not the other sorts: each whole-fleet read keeps the server busy for a while (20 s
#: with 100,000 twins on SecantusDB) and slows every page opened meanwhile; a user who sorts
#: by score or last seen pays that read once per explorer process.
DEFAULT_ORDERS = [TableQuery()]

ANCHORS: dict[AnchorKey, Cursor] = {}
_guard = threading.Lock()
_learning: dict[AnchorKey, threading.Lock] = {}


def anchor_key(where: Key, query: TableQuery) -> AnchorKey:
    return (where, query.search.strip(), query.sort, query.reverse)


def first_page(
    twins: Twins, where: Key, query: TableQuery, clock: Any
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """A first page (``query.after`` is None), read from its anchor when one is known, and
    the anchor remembered when it was not (one reader per anchor at a time)."""
    key = anchor_key(where, query)
    if key in ANCHORS:
        return twin_reads.table_page(twins, query, clock, ANCHORS.get(key))
    with _guard:
        lock = _learning.setdefault(key, threading.Lock())
    with lock:  # whoever came first learns it; the others then read from what it learned
        rows, last = twin_reads.table_page(twins, query, clock, ANCHORS.get(key))
        with _guard:
            if last is not None and len(rows) == query.page_size:
                if len(ANCHORS) >= MOST_ANCHORS:
                    ANCHORS.clear()
                ANCHORS[key] = last
            _learning.pop(key, None)  # waiters hold the lock itself; later callers the anchor
    return rows, last


def learn(twins: Twins, where: Key, queries: Iterable[TableQuery] = DEFAULT_ORDERS) -> None:
    """Learn these first pages' anchors (those not known yet), one after the other."""
    for query in queries:
        if anchor_key(where, query) not in ANCHORS:
            first_page(twins, where, query, None)
            log.info("explorer: the first page by %s is anchored", query.sort)
