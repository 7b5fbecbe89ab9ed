"""Where the table's unfiltered first pages start reading: a remembered anchor, or sampled ids.

A first page of the whole fleet (by id, score or last seen, no filter) has nowhere to start
but the whole index range, and a server that reads a range whole before it applies ``limit``
(SecantusDB) then reads every twin: about 20 s with 100,000 twins. Given an *anchor*, a row
of the list, a first page reads up to it and widens past it instead
(`twin_reads.first_id_windows`, `twin_reads.page_queries`), which costs about what lies
before the anchor. Any row is a valid anchor, so a poor one costs time, never rows.

- A first page's last row is remembered as its anchor for the life of the process.
- By car id, before one is remembered, a sample of the fleet's ids serves as anchors: the
  car ids of the oldest and newest readings in Kafka (`stream_stats.sample_keys`). They cut
  the fleet into gaps (1,200 ids sampled from 100,000 cars: ~80 cars a gap when the sample
  is even), and the page reads gaps until it is full.
- By score, highest first and unfiltered, before one is remembered: the anomalous cars'
  scores give one (`twin_reads.anomalous_anchor`, through the anomaly index).
- Otherwise (by last seen, by lowest score, by id without a sample from Kafka, by score with
  no car anomalous), a process's first such first page reads the whole range.
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
from ui.twin_reads import Cursor, TableQuery, Twins, Where

log = logging.getLogger(__name__)

AnchorKey = tuple[Where, str, str, bool]  # (where, search prefix, sort, reverse)
#: Bounded: past this many, all are forgotten (each is only a hint).
MOST_ANCHORS = 1024
ANCHORS: dict[AnchorKey, Cursor] = {}
_guard = threading.Lock()
_learning: dict[AnchorKey, threading.Lock] = {}


def anchor_key(where: Where, query: TableQuery) -> AnchorKey:
    return (where, query.search.strip(), query.sort, query.reverse)


def first_page(
    twins: Twins,
    where: Where,
    query: TableQuery,
    clock: Any,
    sample: Callable[[], Iterable[str]] = tuple,
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """A first page (``query.after`` is None), read from its anchor when one is known;
    otherwise, by car id, in the gaps between the car ids ``sample()`` gives (or, without
    any, the whole range); then its last row is remembered as the anchor (one reader per
    anchor at a time)."""
    key = anchor_key(where, query)
    if key in ANCHORS:
        return twin_reads.table_page(twins, query, clock, ANCHORS.get(key))
    with _guard:
        lock = _learning.setdefault(key, threading.Lock())
    with lock:  # whoever came first learns it; the others then read from what it learned
        anchor = ANCHORS.get(key)
        by_id = twin_reads.SORTABLE[query.sort][0] == "_id"
        stops = tuple(sample()) if anchor is None and by_id else ()
        if anchor is None and query == TableQuery(
            sort=twin_reads.BY_SCORE, page_size=query.page_size
        ):
            anchor = twin_reads.anomalous_anchor(twins, query.page_size)
        rows, last = twin_reads.table_page(twins, query, clock, anchor, stops)
        with _guard:
            if last is not None and len(rows) == query.page_size:
                if len(ANCHORS) >= MOST_ANCHORS:
                    ANCHORS.clear()
                ANCHORS[key] = last
            _learning.pop(key, None)  # waiters hold the lock itself; later callers the anchor
    return rows, last
