"""Id-ordered pages as bounded, widening id ranges (pure: the ranges are checked against an
in-memory list of ids, as a server would apply them)."""

from __future__ import annotations

import bisect
import dataclasses
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ui.twin_reads import (
    ANOMALOUS,
    FIRMWARE,
    ID,
    SCORE,
    SORTABLE,
    TableQuery,
    cursor_of,
    first_id_windows,
    id_windows_after,
    id_windows_before,
    page_queries,
    prefix_range,
    successor,
    value_windows,
)

CLOCK = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def inside(car: str, window: dict[str, str]) -> bool:
    ops = {
        "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b,
        "$lt": lambda a, b: a < b,
        "$lte": lambda a, b: a <= b,
    }
    return all(ops[op](car, bound) for op, bound in window.items())


def encodable(window: dict[str, str]) -> bool:
    """Every bound is a string BSON can hold (no surrogate code points)."""
    return all(bound.encode("utf-8") is not None for bound in window.values())


def read(ids: list[str], windows: list[dict[str, str]], descending: bool = False) -> list[str]:
    """The ids each window holds, window after window, each window sorted as a server would
    (``ids`` sorted: the window's part is found by bisection, then checked bound by bound)."""
    out: list[str] = []
    for window in windows:
        low = window.get("$gt", window.get("$gte", ""))
        start = bisect.bisect_left(ids, low)
        part = []
        for car in ids[start:]:
            if not all(inside(car, {op: b}) for op, b in window.items() if op[1] == "l"):
                break
            if inside(car, window):
                part.append(car)
        out.extend(sorted(part, reverse=descending))
    return out


def test_successor_edge_cases() -> None:
    assert successor("car1") == "car2"
    assert successor("car9") == "car:"
    assert successor("a\U0010ffff") == "b"  # the last character has no successor: carry
    assert successor("\U0010ffff\U0010ffff") is None
    assert successor("") is None
    assert successor("a\ud7ff") == "a\ue000"  # surrogates are not characters
    assert prefix_range("z\U0010ffff") == {"$gte": "z\U0010ffff", "$lt": "{"}
    assert prefix_range("\U0010ffff") == {"$gte": "\U0010ffff"}


def test_windows_after_an_id_widen_level_by_level() -> None:
    windows = id_windows_after("car5", within="car")
    assert windows[0] == {"$gt": "car5", "$lt": "car6"}  # the ids that extend car5
    assert windows[1:5] == [  # then its next siblings: 1, 2, 4, 8 characters at a time
        {"$gte": "car6", "$lt": "car7"},
        {"$gte": "car7", "$lt": "car9"},
        {"$gte": "car9", "$lt": "car="},
        {"$gte": "car=", "$lt": "carE"},
    ]
    # past ASCII, the rest of the prefix; never beyond the search prefix
    assert windows[-1] == {"$gte": "caru", "$lt": "cas"}
    assert len(windows) == 8
    assert all(inside("car6", w) == (i == 1) for i, w in enumerate(windows))
    # with no search, the levels go on to the open range above everything
    assert id_windows_after("car5")[-1] == {"$gte": "s"}


def test_windows_before_an_id_narrow_towards_the_prefix() -> None:
    windows = id_windows_before("car5", within="car")
    assert windows[:3] == [
        {"$gte": "car4", "$lt": "car5"},
        {"$gte": "car2", "$lt": "car4"},
        {"$gte": "car.", "$lt": "car2"},
    ]
    assert windows[-1] == {"$gte": "car", "$lt": "car\x16"}  # "car" itself, and below
    assert id_windows_before("car5")[-1] == {"$gte": "", "$lt": "$"}
    # a non-ASCII character: the span down to ASCII in one window
    assert id_windows_before("é")[0] == {"$gte": "\x80", "$lt": "é"}


def fleet_ids() -> list[str]:
    """Ids of uneven length and shape: a short id's descendants, gaps, a non-ASCII tail."""
    rng = random.Random(7)
    ids = {f"car{i}" for i in range(1, 400)}
    ids |= {f"truck-{rng.randrange(10**6):06d}" for _ in range(120)}
    ids |= {"car", "c", "cas", "d", "Z9", "ümlaut", "\U0010ffff", "a\U0010ffff", "a\ue000x"}
    return sorted(ids)


@pytest.mark.parametrize("within", ["", "car", "car1", "truck-"])
def test_windows_hold_every_later_id_once_in_order(within: str) -> None:
    ids = fleet_ids()
    scope = [c for c in ids if c.startswith(within)]
    assert scope
    for cursor in scope:
        after = id_windows_after(cursor, within)
        assert all(encodable(w) for w in after)
        assert read(ids, after) == [c for c in scope if c > cursor], cursor
        before = id_windows_before(cursor, within)
        assert read(ids, before, descending=True) == [c for c in reversed(scope) if c < cursor]


@pytest.mark.parametrize("within", ["", "car", "truck-"])
def test_first_page_windows_with_and_without_stops(within: str) -> None:
    ids = fleet_ids()
    scope = [c for c in ids if c.startswith(within)]
    assert read(ids, first_id_windows(within, 1)) == scope  # one range: all of it
    sample = random.Random(7).sample(ids, 12)
    for stops in ([scope[0]], [scope[49]], [scope[-1]], ["car17x"], sample, [*sample, *sample]):
        # any ids, even gone ones or ones outside the search, in any order, repeated or not
        assert read(ids, first_id_windows(within, 1, stops)) == scope, stops
        descending = read(ids, first_id_windows(within, -1, stops), descending=True)
        assert descending == scope[::-1], stops
    assert first_id_windows("car", 1, ["truck-1"]) == [prefix_range("car")]  # not this search


def test_sampled_stops_cut_the_first_page_into_small_gaps() -> None:
    """A prefix of many ids (car1 < car10 < ... < car19999) costs nothing special: each
    window between two sampled ids holds about len(ids) / len(sample) of them."""
    ids = sorted(f"car{n}" for n in range(1, 20_001))
    sample = [f"car{n}" for n in range(1, 20_001, 100)]  # 200 of them
    windows = first_id_windows("", 1, sample)
    sizes = [len(read(ids, [w])) for w in windows[:50]]
    assert sum(sizes[:5]) < 500 and max(sizes) <= 250, sizes
    assert read(ids, windows) == ids


def test_all_cars_by_id_are_id_windows_on_the_indexed_copy() -> None:
    queries = page_queries(TableQuery(after=("car77", "car77")), CLOCK)
    assert queries[0] == ({ID: {"$gt": "car77", "$lt": "car78"}}, [(ID, 1)])
    assert all(list(where) == [ID] for where, _ in queries)
    back = page_queries(TableQuery(reverse=True, after=("car77", "car77")), CLOCK)
    assert back[0] == ({ID: {"$gte": "car76", "$lt": "car77"}}, [(ID, -1)])
    first = page_queries(TableQuery(), CLOCK, anchor=("car140", "car140"), id_stops=["car7"])
    assert first[0] == ({ID: {"$gte": "", "$lte": "car140"}}, [(ID, 1)])
    assert page_queries(TableQuery(), CLOCK) == [({ID: {"$gte": ""}}, [(ID, 1)])]


def test_large_side_filters_ride_along_behind_the_id_window() -> None:
    query = TableQuery(
        anomaly="not anomalous", seen_within=timedelta(minutes=5), after=("car7", "car7")
    )
    where, _sort = page_queries(query, CLOCK)[0]
    assert next(iter(where)) == ID  # first: the field SecantusDB routes
    assert where == {
        ID: {"$gt": "car7", "$lt": "car8"},
        ANOMALOUS: {"$in": [False, None]},
        "last_seen": {"$gte": CLOCK - timedelta(minutes=5)},
    }
    searched = page_queries(dataclasses.replace(query, search="car"), CLOCK)
    assert searched[-1][0][ID] == {"$gte": "carw", "$lt": "cas"}  # never past the prefix


def test_a_narrowing_filter_serves_the_page_and_the_id_rides_along() -> None:
    query = TableQuery(firmware=1000, search="car1", after=("car12", "car12"))
    assert page_queries(query, CLOCK, anchor=("car19", "car19")) == [
        (
            {FIRMWARE: 1000, ID: {"$gte": "car1", "$lt": "car2"}, "_id": {"$gt": "car12"}},
            [("_id", 1)],
        )
    ]
    assert next(iter(page_queries(query, CLOCK)[0][0])) == FIRMWARE  # first: routed


def page_through(ids: list[str], query: TableQuery, anchor: str | None = None) -> list[str]:
    """Every page of ``query`` read as table_page reads them (windows until full)."""
    shown: list[str] = []
    after: Any = None
    while True:
        page: list[str] = []
        q = dataclasses.replace(query, after=after)
        start = (anchor, anchor) if anchor is not None and after is None else None
        for where, sort in page_queries(q, CLOCK, start):
            if len(page) == q.page_size:
                break
            window = where[ID]
            got = read(ids, [window], descending=sort[0][1] == -1)
            page.extend(got[: q.page_size - len(page)])
        shown.extend(page)
        if len(page) < q.page_size:
            return shown
        after = (page[-1], page[-1])


@pytest.mark.parametrize("reverse", [False, True])
def test_paging_through_uneven_ids_shows_each_once_in_order(reverse: bool) -> None:
    ids = fleet_ids()
    for search in ("", "car", "car3", "truck-"):
        scope = sorted((c for c in ids if c.startswith(search)), reverse=reverse)
        query = TableQuery(search=search, reverse=reverse, page_size=7)
        assert page_through(ids, query) == scope
        assert page_through(ids, query, anchor=scope[min(6, len(scope) - 1)]) == scope


def test_value_windows_widen_past_the_cursor() -> None:
    down = value_windows(SCORE, 0.5, -1)
    assert down[0] == {"$lt": 0.5, "$gte": 0.5 - 2**-20}
    assert down[1] == {"$lt": 0.5 - 2**-20, "$gte": 0.5 - 2 * 2**-20}
    assert down[-1] == {"$lt": down[-2]["$gte"]}  # then the rest
    up = value_windows("last_seen", CLOCK, 1)
    assert up[0] == {"$gt": CLOCK, "$lte": CLOCK + timedelta(seconds=1)}
    assert len(up) == 31


def field(doc: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None  # type: ignore[assignment]
    return doc


def matches(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    """A flat filter as MongoDB applies it (null is below every number, ranges skip it)."""
    for path, cond in where.items():
        value = field(doc, path)
        if not isinstance(cond, dict):
            if value != cond:
                return False
            continue
        for op, bound in cond.items():
            if op == "$in":
                if value not in bound:
                    return False
            elif (
                value is None
                or not {
                    "$gt": value > bound,
                    "$gte": value >= bound,
                    "$lt": value < bound,
                    "$lte": value <= bound,
                }[op]
            ):
                return False
    return True


def server_find(docs: list[dict[str, Any]], where: dict, sort: list, limit: int) -> list[dict]:
    found = [d for d in docs if matches(d, where)]
    for path, direction in reversed(sort):  # stable sorts, last key first; nulls lowest
        found.sort(
            key=lambda d, p=path: (field(d, p) is not None, field(d, p) or 0),
            reverse=direction == -1,
        )
    return found[:limit]


def fleet_docs() -> list[dict[str, Any]]:
    """Scores with ties, gaps and nulls; last-seen times over a day (a third of them tied),
    some never."""
    rng = random.Random(3)
    docs = []
    for i, car in enumerate(fleet_ids()):
        score = None if i % 9 == 0 else round(rng.choice([0.1, 0.8, rng.random()]), 3)
        seen = None if i % 13 == 0 else CLOCK - timedelta(seconds=rng.randrange(86_400))
        if i % 3 == 0 and seen:  # a third of the fleet reported in step: one tied value
            seen = CLOCK
        docs.append(
            {"_id": car, "car_id": car, "anomaly": {"score": score} if score else None}
            | {"last_seen": seen}
        )
    return docs


def read_pages(docs: list[dict], query: TableQuery, anchored: bool) -> list[str]:
    shown: list[str] = []
    after: Any = None
    anchor: Any = None
    while True:
        q = dataclasses.replace(query, after=after)
        page: list[dict] = []
        for where, sort in page_queries(q, CLOCK, anchor if after is None else None):
            wanted = q.page_size - len(page)
            if wanted <= 0:
                break
            page.extend(server_find(docs, where, sort, wanted))
        shown.extend(d["_id"] for d in page)
        if anchored and after is None and anchor is None and page:
            anchor = cursor_of(page[-1], q)  # as the explorer remembers it
            shown.clear()
            continue  # read the first page again, now from the anchor
        if len(page) < q.page_size:
            return shown
        after = cursor_of(page[-1], q)


@pytest.mark.parametrize("sort", ["anomaly score (highest first)", "last seen (oldest first)"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("anchored", [False, True])
def test_paging_by_a_value_shows_each_car_once_in_order(
    sort: str, reverse: bool, anchored: bool
) -> None:
    docs = fleet_docs()
    query = TableQuery(sort=sort, reverse=reverse, page_size=9)
    path, direction = SORTABLE[sort]
    expected = [
        d["_id"]
        for d in server_find(
            docs, {}, [(path, direction * (-1 if reverse else 1)), ("_id", 1)], 10**6
        )
    ]
    assert read_pages(docs, query, anchored) == expected
    first = page_queries(query, CLOCK, anchor=(None, "car1") if anchored else None)
    assert all(next(iter(where)) == path for where, _ in first)  # the value's index serves


def test_ties_on_last_seen_are_paged_by_id_windows_on_their_compound_index() -> None:
    query = TableQuery(sort="last seen (oldest first)", after=(CLOCK, "car5"))
    assert page_queries(query, CLOCK)[0] == (
        {"last_seen": CLOCK, ID: {"$gt": "car5", "$lt": "car6"}},
        [(ID, 1)],
    )
    # With a filter, that filter's index serves the page: one query for the ties.
    filtered = dataclasses.replace(query, firmware=1000)
    assert page_queries(filtered, CLOCK)[0] == (
        {FIRMWARE: 1000, "last_seen": CLOCK, "_id": {"$gt": "car5"}},
        [("_id", 1)],
    )
