"""Which MongoDB operations are slow with 100,000 twins: the explorer's queries beside the
forms it avoids, timed one by one against a seeded twins collection.

    .venv/bin/python bench/ui_queries.py --uri mongodb://127.0.0.1:PORT/ --database DB

Run it against a database `bench/ui_render.py` (or the projector) filled. Writes
bench/results/ui-queries.json and .md. Figures are indicative: one run, a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from pymongo import MongoClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from twin import store  # noqa: E402
from twin.health import CONDITION_NAMES  # noqa: E402
from ui import twin_reads  # noqa: E402
from ui.twin_reads import TableQuery  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def operations(twins: Any, clock: Any) -> list[tuple[str, str, Any]]:
    """(what, used or avoided, call)."""
    since = clock - timedelta(minutes=5)
    attention = {"health.conditions.name": {"$in": list(CONDITION_NAMES)}}
    return [
        ("collection count (count command, no filter)", "used", twins.estimated_document_count),
        (
            "count anomalous (is_anomaly: true)",
            "used",
            lambda: twins.count_documents({"anomaly.is_anomaly": True}),
        ),
        (
            "count silent ($lt on last_seen) + never seen (null)",
            "used",
            lambda: (
                twins.count_documents({"last_seen": {"$lt": since}})
                + twins.count_documents({"last_seen": None})
            ),
        ),
        (
            "silent as $or [$lt, null] (twin.queries' form)",
            "avoided",
            lambda: twins.count_documents(
                {"$or": [{"last_seen": {"$lt": since}}, {"last_seen": None}]}
            ),
        ),
        (
            "cars per condition + needing attention (one aggregation)",
            "used",
            lambda: list(twins.aggregate(twin_reads.health_pipeline())),
        ),
        (
            "count needing attention ($in on conditions)",
            "used",
            lambda: twins.count_documents(attention),
        ),
        (
            "table page: firmware 1000, by id",
            "used",
            lambda: twin_reads.table_page(twins, TableQuery(firmware=1000), clock),
        ),
        (
            "table page: anomalous by score",
            "used",
            lambda: twin_reads.table_page(
                twins, TableQuery(anomaly="anomalous", sort="anomaly score (highest first)"), clock
            ),
        ),
        (
            "point lookups: 50 ids ($in on _id)",
            "used",
            lambda: list(twins.find({"_id": {"$in": [f"car{i}" for i in range(4200, 4250)]}})),
        ),
        (
            "all cars by _id, limit 50",
            "avoided (cheap on MongoDB 7 only)",
            lambda: list(twins.find({}, {"_id": 1}).sort("_id").limit(50)),
        ),
        (
            "car-id prefix as a car_id range (car4242), limit 50",
            "used",
            lambda: list(
                twins.find({"car_id": twin_reads.prefix_range("car4242")}, {"_id": 1}).limit(50)
            ),
        ),
        (
            "newest twin: sort last_seen desc, limit 1",
            "avoided (fleet clock from Kafka)",
            lambda: twins.find_one({}, {"last_seen": 1}, sort=[("last_seen", -1)]),
        ),
        (
            "not anomalous as $ne: true",
            "avoided",
            lambda: twins.count_documents({"anomaly.is_anomaly": {"$ne": True}}),
        ),
    ]


SCORE_SORT = "anomaly score (highest first)"
SEEN_SORT = "last seen (oldest first)"


def table_pages(twins: Any, clock: Any) -> list[tuple[str, float]]:
    """The fleet table's pages as the explorer reads them (`twin_reads.table_page`), timed:
    each first page without an anchor (a fresh explorer process), then with the one it left
    (every later first page), the next page, and deeper pages across id-window boundaries."""
    out: list[tuple[str, float]] = []

    def timed(name: str, call: Any) -> Any:
        started = time.perf_counter()
        result = call()
        seconds = round(time.perf_counter() - started, 3)
        rows = result[0] if isinstance(result, tuple) else None
        shown = f"{rows[0]['car']} .. {rows[-1]['car']}" if rows else repr(result)
        print(f"  {seconds:8.3f} s  {name} ({shown})", flush=True)
        out.append((name, seconds))
        return result

    def page(query: TableQuery, anchor: Any = None) -> Any:
        return twin_reads.table_page(twins, query, clock, anchor)

    for label, base in [
        ("all cars by id", TableQuery()),
        ("not anomalous by id", TableQuery(anomaly="not anomalous")),
        ("all cars by score", TableQuery(sort=SCORE_SORT)),
        ("all cars by last seen", TableQuery(sort=SEEN_SORT)),
    ]:
        _rows, last = timed(f"{label}: first page, no anchor yet", lambda b=base: page(b))
        timed(f"{label}: first page from its anchor", lambda b=base, a=last: page(b, a))
        second = timed(
            f"{label}: next page", lambda b=base, a=last: page(dataclasses.replace(b, after=a))
        )
        timed(
            f"{label}: page 3",
            lambda b=base, a=second[1]: page(dataclasses.replace(b, after=a)),
        )
    deep = [("car50999", "car50999"), ("car9", "car9")]
    for cursor in deep:
        timed(f"all cars by id: page after {cursor[1]}", lambda c=cursor: page(TableQuery(after=c)))
    timed(
        "all cars by id, reversed: page before car50000",
        lambda: page(TableQuery(reverse=True, after=("car50000", "car50000"))),
    )
    timed(
        "all cars by id, reversed: page before car49958",
        lambda: page(TableQuery(reverse=True, after=("car49958", "car49958"))),
    )
    for prefix in ("car4242", "car42"):
        query = TableQuery(search=prefix)
        timed(f"search {prefix}: count", lambda q=query: twin_reads.table_count(twins, q, clock))
        _rows, last = timed(f"search {prefix}: first page", lambda q=query: page(q))
        if last is not None:
            timed(
                f"search {prefix}: next page",
                lambda q=query, a=last: page(dataclasses.replace(q, after=a)),
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--collection", default="twins")
    parser.add_argument(
        "--before", help="a JSON file {operation: seconds} measured on main, for a column"
    )
    args = parser.parse_args()
    before = json.loads(Path(args.before).read_text()) if args.before else {}
    database = MongoClient(args.uri, tz_aware=True)[args.database]
    twins = store.twins_collection(database, args.collection)
    size = twins.estimated_document_count()
    newest = twins.find_one({"_id": "car1"}, {"last_seen": 1})
    clock = newest["last_seen"] if newest else None
    load_before = os.getloadavg()
    rows = []
    print("table pages:", flush=True)
    for what, seconds in table_pages(twins, clock):
        rows.append({"operation": what, "role": "table page", "seconds": seconds})
    print("single operations:", flush=True)
    for what, role, call in operations(twins, clock):
        started = time.perf_counter()
        call()
        seconds = round(time.perf_counter() - started, 3)
        print(f"  {seconds:8.3f} s  {what} ({role})", flush=True)
        rows.append({"operation": what, "role": role, "seconds": seconds})
    result = {
        "benchmark": "ui_queries",
        "twins": size,
        "operations": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "before": before,
        "caveat": "One run each, on a shared machine: indicative.",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ui-queries.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# MongoDB operations with {size:,} twins (SecantusDB)",
        "",
        "| operation | in the explorer | seconds | before (main) |",
        "| --- | --- | --- | --- |",
        *(
            "| {operation} | {role} | {seconds} | {was} |".format(
                **r, was=before.get(r["operation"], "")
            )
            for r in rows
        ),
        "",
        "Load average (1, 5, 15 min) before the run: "
        f"{', '.join(f'{x:.1f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}. " + result["caveat"],
        "",
    ]
    (RESULTS / "ui-queries.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
