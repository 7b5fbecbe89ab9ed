"""The explorer's reads of the twins: bounded, index-served queries only (no scans).

Every filter is one flat document of indexed fields (no top-level ``$and``/``$or``/``$ne``/
regex), so any server can route it through one index: MongoDB 7 does so for every form, but a
simpler MongoDB-wire server (SecantusDB) routes only plain equality, ranges and ``$in``, and
otherwise reads the whole collection. Pages are keyset pages (a range past the previous page's
last sort key, then ``limit``), never ``skip``. Counts count the small side: "not anomalous"
is all cars minus the anomalous ones, "reporting" all cars minus the silent ones.
Query building is pure (unit-tested); the functions taking a collection do the I/O.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from twin.health import CONDITION_NAMES

Twins = Collection[dict[str, Any]]
Where = tuple[str, str, str]  # where the twins live: (server, database, collection)
Filter = dict[str, Any]
AnomalyChoice = Literal["any", "anomalous", "not anomalous"]

FIRMWARE = "reported.control_unit_firmware.value"
ANOMALOUS = "anomaly.is_anomaly"
SCORE = "anomaly.score"
CONDITION = "health.conditions.name"
#: The condition choice meaning "at least one condition" (health status `attention`).
ANY_CONDITION = "any condition"
BY_SCORE = "anomaly score (highest first)"
#: Sort orders offered by the table: label -> the indexed field (ties broken by car id).
SORTABLE: dict[str, tuple[str, int]] = {
    "car id": ("_id", ASCENDING),
    BY_SCORE: (SCORE, DESCENDING),
    "last seen (oldest first)": ("last_seen", ASCENDING),
}
#: Below every number / date: "any value that is not null".
LOWEST: dict[str, Any] = {SCORE: float("-inf"), "last_seen": datetime(1970, 1, 1, tzinfo=UTC)}
Cursor = tuple[Any, str]  # (sort value, car id) of a page's last row


@dataclass(frozen=True)
class TableQuery:
    """What the fleet table asks for: filters, a sort, and where the page starts."""

    search: str = ""  # car id prefix
    condition: str | None = None  # a condition name or ANY_CONDITION
    anomaly: AnomalyChoice = "any"
    firmware: int | None = None
    seen_within: timedelta | None = None  # last seen at most this long before the fleet clock
    silent_for: timedelta | None = None  # not seen for at least this long
    sort: str = "car id"
    reverse: bool = False
    page_size: int = 50
    after: Cursor | None = field(default=None, compare=True)  # keyset: start past this row


def merge(*parts: Filter) -> Filter:
    """AND flat filters into one flat filter, joining operator documents on the same field
    (``{_id: {$gte: a}}`` and ``{_id: {$gt: b}}`` give ``{_id: {$gte: a, $gt: b}}``); only a
    true clash (an equality and another condition on one field) falls back to ``$and``."""
    out: Filter = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = value
            elif _ops(out[key]) and _ops(value) and not set(out[key]) & set(value):
                out[key] = {**out[key], **value}
            else:
                return {"$and": [p for p in parts if p]}
    return out


def _ops(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k.startswith("$") for k in value)


#: The indexed copy of the car id (twin.fold.new_twin): id ranges are served by its index on
#: every server, while SecantusDB's `_id` index serves only point lookups.
ID = "car_id"
#: Past this code point, sibling windows stop doubling and take the rest of their level: ids
#: are mostly ASCII, and every probe is a round trip (cheap when empty, but not free).
ASCII_END = 0x80
MAX_CHAR = 0x10FFFF
SURROGATES = range(0xD800, 0xE000)  # not characters: BSON strings cannot hold them


def _char_after(code: int) -> int | None:
    """The code point after ``code`` (skipping surrogates), None past the last one."""
    code += 1
    if code in SURROGATES:
        code = SURROGATES.stop
    return code if code <= MAX_CHAR else None


def successor(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: there is none,
    the prefix is empty or all U+10FFFF): the exclusive upper bound of a prefix range."""
    while prefix:
        code = _char_after(ord(prefix[-1]))
        if code is not None:
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


def prefix_range(prefix: str) -> Filter:
    """Ids starting with ``prefix`` as an index range (what an anchored regex means, but every
    server can serve a range from the index)."""
    end = successor(prefix)
    return {"$gte": prefix, "$lt": end} if end is not None else {"$gte": prefix}


def base_filter(query: TableQuery, clock: datetime | None) -> Filter:
    """The filters except the two "large side" ones (not anomalous, seen within)."""
    parts: list[Filter] = []
    if query.condition == ANY_CONDITION:
        parts.append({CONDITION: {"$in": list(CONDITION_NAMES)}})
    elif query.condition is not None:
        if query.condition not in CONDITION_NAMES:
            raise ValueError(
                f"unknown condition {query.condition!r}; one of {', '.join(CONDITION_NAMES)}"
            )
        parts.append({CONDITION: query.condition})
    if query.anomaly == "anomalous":
        parts.append({ANOMALOUS: True})
    if query.firmware is not None:
        parts.append({FIRMWARE: query.firmware})
    if clock is not None and query.silent_for is not None:
        parts.append({"last_seen": {"$lt": clock - query.silent_for}})
    if query.search.strip():  # last: a narrowing filter's index is the one SecantusDB routes
        parts.append({ID: prefix_range(query.search.strip())})
    return merge(*parts)


def complements(query: TableQuery, clock: datetime | None) -> list[list[Filter]]:
    """The large-side filters as their small complements, each a list of disjoint parts."""
    out: list[list[Filter]] = []
    if query.anomaly == "not anomalous":
        out.append([{ANOMALOUS: True}])
    if clock is not None and query.seen_within is not None:
        out.append([{"last_seen": {"$lt": clock - query.seen_within}}, {"last_seen": None}])
    return out


def table_filter(query: TableQuery, clock: datetime | None) -> Filter:
    """The whole filter of the table's rows."""
    parts = [base_filter(query, clock)]
    if query.anomaly == "not anomalous":
        parts.append({ANOMALOUS: {"$in": [False, None]}})  # equality: index-served
    if clock is not None and query.seen_within is not None:
        parts.append({"last_seen": {"$gte": clock - query.seen_within}})
    return merge(*parts)


def count_terms(query: TableQuery, clock: datetime | None) -> list[tuple[int, Filter]]:
    """(sign, filter) terms whose signed counts add up to the table's count (inclusion-
    exclusion over the complements), so only small sets are ever counted when the base is
    small; an empty filter stands for "all twins" (the collection's own count)."""
    base = base_filter(query, clock)
    terms: list[tuple[int, Filter]] = []
    groups = complements(query, clock)
    for chosen in itertools.product(*[[None, *g] for g in groups]):
        picked = [c for c in chosen if c is not None]
        terms.append(((-1) ** len(picked), merge(base, *picked)))
    return terms


def id_windows_after(after: str, within: str = "") -> list[Filter]:
    """Disjoint id ranges that together hold every id above ``after`` starting with ``within``
    (a prefix of ``after``), in id order, nearest first.

    A server that reads every document of an index range before it applies ``limit``
    (SecantusDB) pays for a range what it holds, so a page reads windows in order until it is
    full: first the ids that extend ``after`` (its descendants in the id's character tree),
    then, at each shorter prefix of ``after``, its next siblings (the next character, then
    spans of 2, 4, 8... characters; past ASCII, the rest of that prefix), up to the prefix
    ``within`` (the search), or the open range above everything when there is none.
    """
    windows: list[Filter] = []
    top = successor(after)
    windows.append({"$gt": after, "$lt": top} if top is not None else {"$gt": after})
    for length in range(len(after) - 1, len(within) - 1, -1):
        stem, code = after[:length], ord(after[length])
        end = successor(stem)  # the end of this level: past every id starting with stem
        low, span = _char_after(code), 1
        if low is None:  # the last character: no sibling after it
            continue
        while low + span < ASCII_END:
            windows.append({"$gte": stem + chr(low), "$lt": stem + chr(low + span)})
            low, span = low + span, span * 2
        rest = stem + chr(low)
        windows.append({"$gte": rest, "$lt": end} if end is not None else {"$gte": rest})
    return windows


def id_windows_before(before: str, within: str = "") -> list[Filter]:
    """The mirror of `id_windows_after`: disjoint ranges holding every id below ``before``
    that starts with ``within``, nearest first (for descending order). At each shorter prefix
    of ``before``: its previous siblings (1, 2, 4... characters down), then the prefix itself
    with whatever lies below the lowest sibling tried."""
    windows: list[Filter] = []
    for length in range(len(before) - 1, len(within) - 1, -1):
        stem, high = before[:length], ord(before[length])
        if high > ASCII_END:  # beyond ASCII: the rest of it in one window
            windows.append({"$gte": stem + chr(ASCII_END), "$lt": stem + chr(high)})
            high = ASCII_END
        span = 1
        while high - span > 0:
            windows.append({"$gte": stem + chr(high - span), "$lt": stem + chr(high)})
            high, span = high - span, span * 2
        windows.append({"$gte": stem, "$lt": stem + chr(high)})
    return windows


def first_id_windows(within: str, direction: int, stops: Sequence[str] = ()) -> list[Filter]:
    """The first page's id ranges. Where the first page ends is unknowable without reading, so
    with no ``stops`` it is one range (the search prefix's, or every id). ``stops`` are ids
    known or likely to be in the list (a remembered first page's last id, or a sample of the
    fleet's ids): the page then reads up to the first stop, from there to the next, ... and
    past the last widens as `id_windows_after` does (mirrored when descending). Stops sampled
    from the fleet cut it into gaps of about equal size, whatever the ids look like."""
    bounds = prefix_range(within)  # the empty prefix: every string
    ordered = sorted({stop for stop in stops if stop.startswith(within)})
    if not ordered:
        return [bounds]
    if direction == ASCENDING:
        gaps = [{"$gt": low, "$lte": high} for low, high in itertools.pairwise(ordered)]
        return [
            {"$gte": within, "$lte": ordered[0]},
            *gaps,
            *id_windows_after(ordered[-1], within),
        ]
    upto = {"$lt": bounds["$lt"]} if "$lt" in bounds else {}
    gaps = [{"$gte": low, "$lt": high} for low, high in itertools.pairwise(ordered)]
    return [{"$gte": ordered[-1], **upto}, *gaps[::-1], *id_windows_before(ordered[0], within)]


def page_queries(
    query: TableQuery,
    clock: datetime | None,
    anchor: Cursor | None = None,
    id_stops: Sequence[str] = (),
) -> list[tuple[Filter, list[Any]]]:
    """The keyset page as a few (filter, sort) queries, read in order until the page is full.

    Order is (sort field, car id) with nulls lowest, as MongoDB sorts. Past a cursor (v, id):
    first the rows tied at v after id, then those strictly beyond v (then, descending, the
    nulls). Each query is a flat filter with a range on the sort key.

    By car id: with a narrowing filter (a condition, anomalous, a firmware, silent for), that
    filter's index serves the page and the id range rides along; with none (all cars, or only
    a search prefix, "not anomalous", "seen within"), id windows on the `car_id` index
    (`id_windows_after`), put first in the filter because SecantusDB routes a filter's first
    indexed field (measured: 0.2 s against 23 s for the other order); the rest rides along.
    ``anchor`` is a remembered last row of a first page in this order, ``id_stops`` (by car id,
    without an anchor) a sample of the fleet's ids (`first_id_windows`): any rows will do,
    they change what a first page costs, never what it shows.
    """
    path, direction = SORTABLE[query.sort]
    if query.reverse:
        direction = -direction
    where = table_filter(query, clock)
    if path == "_id":
        search = query.search.strip()
        narrowing = base_filter(dataclasses.replace(query, search=""), clock)
        if narrowing:
            keyset = {} if query.after is None else {"_id": {_gt(direction): query.after[1]}}
            return [(merge(where, keyset), [("_id", direction)])]
        rest = {k: v for k, v in where.items() if k != ID}
        if query.after is None:
            windows = first_id_windows(search, direction, [anchor[1]] if anchor else id_stops)
        elif direction == ASCENDING:
            windows = id_windows_after(query.after[1], search)
        else:
            windows = id_windows_before(query.after[1], search)
        return [({ID: window, **rest}, [(ID, direction)]) for window in windows]
    # By a value (score, last seen): with no filter at all, the page is read in windows of
    # that value past the cursor (`value_windows`), the value's field first in each filter so
    # that its index serves it; with a filter, that filter's index serves every query.
    windowed = not base_filter(query, clock)
    by_value = [(path, direction), ("_id", ASCENDING)]
    by_id = [("_id", ASCENDING)]
    tie_windows = windowed and path in TIES_BY_ID

    def part(extra: Filter, sort: list[Any]) -> tuple[Filter, list[Any]]:
        return (merge(extra, where) if windowed else merge(where, extra), sort)

    def ties(value: Any, car: str, upto: bool = False) -> list[tuple[Filter, list[Any]]]:
        """The rows tied at ``value`` after ``car`` (or up to it): by id windows when an
        index on (value, car id) serves them (a whole fleet may share one `last_seen`)."""
        if not tie_windows:
            return [part({path: value, "_id": {"$lte" if upto else "$gt": car}}, by_id)]
        if upto:
            return [part({path: value, ID: {"$lte": car}}, [(ID, ASCENDING)])]
        return [part({path: value, ID: w}, [(ID, ASCENDING)]) for w in id_windows_after(car)]

    def past(value: Any, car: str) -> list[tuple[Filter, list[Any]]]:
        """Rows after (value, car): its ties, then beyond it, then (descending) the nulls."""
        out = ties(value, car)
        if value is None:
            if direction == ASCENDING:
                out.append(part({path: {"$gte": LOWEST[path]}}, by_value))
            return out
        beyond = value_windows(path, value, direction) if windowed else [{_gt(direction): value}]
        out.extend(part({path: window}, by_value) for window in beyond)
        if direction == DESCENDING:
            out.append(part({path: None}, by_id))
        return out

    nulls = part({path: None}, by_id)
    if query.after is not None:
        return past(*query.after)
    if windowed and anchor is not None and anchor[0] is not None:
        # Up to a remembered last row of this first page, then past it (see first_id_windows).
        value, car = anchor
        before = {"$gte": LOWEST[path], "$lt": value} if direction == ASCENDING else {"$gt": value}
        head = [part({path: before}, by_value), *ties(value, car, upto=True)]
        return (
            [nulls, *head, *past(value, car)]
            if direction == ASCENDING
            else [*head, *past(value, car)]
        )
    any_value = part({path: {"$gte": LOWEST[path]}}, by_value)
    return [nulls, any_value] if direction == ASCENDING else [any_value, nulls]


#: Sort fields with an index on (field, car_id) (twin.store.INDEXES): their ties are paged by
#: id windows too.
TIES_BY_ID = {"last_seen"}
#: Value windows past a cursor: the first spans this much, each next one twice the one before
#: until this span, then the rest (scores ~1e-6 .. 1024, times 1 s .. 34 years): a page reads
#: about what it shows, at the price of a few round trips for empty windows.
VALUE_STEPS: dict[str, tuple[Any, Any]] = {
    SCORE: (2.0**-20, 2.0**10),
    "last_seen": (timedelta(seconds=1), timedelta(seconds=2**30)),
}


def value_windows(path: str, value: Any, direction: int) -> list[Filter]:
    """Disjoint ranges of ``path`` past ``value`` (above it ascending, below it descending),
    nearest first, widening: the same idea as `id_windows_after`, on numbers and times."""
    step, widest = VALUE_STEPS[path]
    windows: list[Filter] = []
    near = value
    while step < widest:
        try:
            far = value + step if direction == ASCENDING else value - step
        except OverflowError:  # a date near the calendar's ends
            break
        windows.append(
            {"$gt": near, "$lte": far} if direction == ASCENDING else {"$lt": near, "$gte": far}
        )
        near, step = far, step * 2
    windows.append({"$gt": near} if direction == ASCENDING else {"$lt": near})
    return windows


def _gt(direction: int) -> str:
    return "$gt" if direction == ASCENDING else "$lt"


def cursor_of(doc: dict[str, Any], query: TableQuery) -> Cursor:
    """The keyset cursor of a page's last row."""
    path, _ = SORTABLE[query.sort]
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return (value, doc["_id"])


def table_rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten projected twins into table rows."""
    rows = []
    for doc in docs:
        anomaly = doc.get("anomaly") or {}
        health = doc.get("health") or {}
        firmware = (doc.get("reported") or {}).get("control_unit_firmware") or {}
        rows.append(
            {
                "car": doc["_id"],
                "health": health.get("status", "unknown"),
                "conditions": ", ".join(sorted({c["name"] for c in health.get("conditions", [])})),
                "anomalous": anomaly.get("is_anomaly"),
                "score": anomaly.get("score"),
                "firmware": firmware.get("value"),
                "last seen": doc.get("last_seen"),
                "readings": (doc.get("counters") or {}).get("readings_applied", 0),
            }
        )
    return rows


#: The table's columns only (not the reported values, history or positions).
TABLE_PROJECTION = {
    "health.status": 1,
    "health.conditions.name": 1,
    ANOMALOUS: 1,
    SCORE: 1,
    FIRMWARE: 1,
    "last_seen": 1,
    "counters.readings_applied": 1,
}


def health_pipeline() -> list[dict[str, Any]]:
    """Cars per condition and cars with any condition ("*"), in one pass over the cars that
    have a condition (through the condition index). A car with one condition on two wheels
    counts once for it."""
    return [
        {"$match": {CONDITION: {"$in": list(CONDITION_NAMES)}}},
        {"$project": {"health.conditions.name": 1}},
        {"$unwind": "$health.conditions"},
        {"$group": {"_id": "$_id", "names": {"$addToSet": "$health.conditions.name"}}},
        {"$project": {"names": {"$concatArrays": ["$names", ["*"]]}}},
        {"$unwind": "$names"},
        {"$group": {"_id": "$names", "cars": {"$sum": 1}}},
    ]


# --- I/O: each function is a few bounded, index-served round trips ---


def count(twins: Twins, where: Filter, total: int | None = None) -> int:
    """Twins matching ``where``; an empty filter is the collection's own count (``total`` when
    the caller already knows it)."""
    if where:
        return twins.count_documents(where)
    return total if total is not None else twins.estimated_document_count()


@dataclass(frozen=True)
class FleetSummary:
    twins: int
    reporting: int  # seen within the reporting window before the clock
    anomalous: int
    attention: int  # at least one health condition
    conditions: dict[str, int]  # cars per health condition name
    onsets: list[datetime]  # when each anomalous car turned anomalous
    clock: datetime | None


def fleet_summary(
    twins: Twins,
    window: timedelta,
    clock: datetime | None,
    total: int | None = None,
    onset_limit: int = 50_000,
) -> FleetSummary:
    """Fleet-wide figures, each from the few cars it is about: the silent (a range and a null
    on `last_seen`), the anomalous (equality on the anomaly index) and those with a condition
    (one aggregation through the condition index). Reporting = all - silent."""
    total = count(twins, {}, total)
    if clock is None:
        silent = total
    else:
        since = clock - window
        silent = count(twins, {"last_seen": {"$lt": since}}) + count(twins, {"last_seen": None})
    per_name = {row["_id"]: row["cars"] for row in twins.aggregate(health_pipeline())}
    cursor = twins.find({ANOMALOUS: True}, {"_id": 0, "anomaly.anomalous_since": 1})
    anomalous_docs = list(cursor.limit(onset_limit))
    anomalous = len(anomalous_docs)
    if anomalous == onset_limit:  # more than we fetch: count them all
        anomalous = count(twins, {ANOMALOUS: True})
    onsets = [
        d["anomaly"]["anomalous_since"]
        for d in anomalous_docs
        if d.get("anomaly", {}).get("anomalous_since")
    ]
    return FleetSummary(
        twins=total,
        reporting=max(0, total - silent),
        anomalous=anomalous,
        attention=per_name.get("*", 0),
        conditions={name: per_name.get(name, 0) for name in CONDITION_NAMES},
        onsets=onsets,
        clock=clock,
    )


def table_count(
    twins: Twins, query: TableQuery, clock: datetime | None, total: int | None = None
) -> int:
    terms = count_terms(query, clock)
    return max(0, sum(sign * count(twins, where, total) for sign, where in terms))


def table_page(
    twins: Twins,
    query: TableQuery,
    clock: datetime | None,
    anchor: Cursor | None = None,
    id_stops: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One keyset page (only the table's fields) and the cursor of its last row."""
    docs: list[dict[str, Any]] = []
    for where, sort in page_queries(query, clock, anchor, id_stops):
        wanted = query.page_size - len(docs)
        if wanted <= 0:
            break
        docs.extend(twins.find(where, TABLE_PROJECTION).sort(sort).limit(wanted))
    last = cursor_of(docs[-1], query) if docs else None
    return table_rows(docs), last


def get_twin(twins: Twins, car_id: str) -> dict[str, Any] | None:
    return twins.find_one({"_id": car_id})


def similar_ids(twins: Twins, car_id: str) -> list[str]:
    """Existing cars whose id is the typed one shortened or in other case (a typo's likely
    intent), by `_id` point lookups only."""
    stems = {car_id[:n] for n in range(1, len(car_id))}
    candidates = sorted(stems | {car_id.lower(), car_id.upper()} - {car_id}, key=len, reverse=True)
    found = {d["_id"] for d in twins.find({"_id": {"$in": candidates}}, {"_id": 1})}
    return [c for c in candidates if c in found][:5]


def anomalous_anchor(twins: Twins, page_size: int) -> Cursor | None:
    """An anchor for the first page by score (highest first): the ``page_size``-th highest
    score among the anomalous cars (the lowest of them, if fewer), read through the anomaly
    index, so it costs what the anomalous cars are, not the fleet. Anomalous cars score above
    their threshold and the others below it, so with one model live about ``page_size`` cars
    score above this anchor; None when no car is anomalous."""
    cursor = twins.find({ANOMALOUS: True}, {SCORE: 1})
    top = list(cursor.sort([(SCORE, DESCENDING), ("_id", ASCENDING)]).limit(page_size))
    return (top[-1]["anomaly"]["score"], top[-1]["_id"]) if top else None


def leaderboard(
    twins: Twins, limit: int = 25, only_anomalous: bool = False
) -> list[dict[str, Any]]:
    """The highest anomaly scores in the fleet, with the sensors that drive them (and the
    reported values, which the reasons quote)."""
    where = {ANOMALOUS: True} if only_anomalous else {SCORE: {"$gte": LOWEST[SCORE]}}
    projection = {"recent_readings": 0, "positions": 0}
    cursor = twins.find(where, projection).sort([(SCORE, DESCENDING), ("_id", ASCENDING)])
    return list(cursor.limit(limit))
