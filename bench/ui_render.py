"""Explorer benchmark: time to render the overview, the fleet table (plain, filtered, sorted,
deep page), a car and the anomaly leaderboard with 100,000 twins in the MongoDB-wire server.

    .venv/bin/python bench/ui_render.py [--size N] [--runs R] [--external]

Starts its own Kafka and MongoDB-wire server on free ports in a temporary folder (or, with
--external, uses the stack the settings describe), inserts N twin documents of the real shape
(simulated readings and scores folded by the twin package's own fold; the projector's indexes),
then renders each page with streamlit's AppTest: first the pages that need whole-fleet reads
as a fresh explorer process shows them (opened at start, and after the start-up warm-up), then
every page "cold" with Streamlit's caches cleared before every run, and "warm" straight after.
Writes bench/results/ui.json and ui.md. Figures are indicative: the machine is small and
shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet import clients  # noqa: E402
from fleet.avro import telemetry_codec  # noqa: E402
from fleet.logs import configure_logging  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.stack import Stack  # noqa: E402
from tests.conftest import stack_environment  # noqa: E402
from tests.ui.fleetdata import simulated_twins  # noqa: E402
from twin import store  # noqa: E402
from ui import anchors, cached, fleet_count  # noqa: E402
from ui.context import SETTINGS_KEY  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CHUNK = 5_000
#: Readings folded per car. Short, so that seeding 100,000 twins
#: into the MongoDB-wire server fits a bench run; every other part has its full shape.
HISTORY = 3

#: (name, page script, query params, widget values and button clicks before the timed run).
SCENARIOS: list[tuple[str, str, dict[str, str], list[tuple[str, str, Any]]]] = [
    ("overview", "views/overview.py", {}, []),
    (
        "table: cars needing attention",
        "views/fleet_table.py",
        {},
        [("selectbox", "table.condition", "any condition")],
    ),
    (
        "table: condition filter, sorted by score",
        "views/fleet_table.py",
        {},
        [
            ("selectbox", "table.condition", "tire_pressure_low"),
            ("selectbox", "table.sort", "anomaly score (highest first)"),
        ],
    ),
    (
        "table: anomalous by score, next page (keyset)",
        "views/fleet_table.py",
        {},
        [
            ("selectbox", "table.anomaly", "anomalous"),
            ("selectbox", "table.sort", "anomaly score (highest first)"),
            ("button", "table.next", None),
        ],
    ),
    (
        "table: firmware 1000",
        "views/fleet_table.py",
        {},
        [("text_input", "table.firmware", "1000")],
    ),
    ("fleet table (all cars by id)", "views/fleet_table.py", {}, []),
    ("fleet table: next page", "views/fleet_table.py", {}, [("button", "table.next", None)]),
    (
        "fleet table: page 3, then previous",
        "views/fleet_table.py",
        {},
        [
            ("button", "table.next", None),
            ("button", "table.next", None),
            ("button", "table.prev", None),
        ],
    ),
    (
        "table: search car id prefix",
        "views/fleet_table.py",
        {},
        [("text_input", "table.search", "car4242")],
    ),
    (
        "table: search car id prefix car42",
        "views/fleet_table.py",
        {},
        [("text_input", "table.search", "car42")],
    ),
    (
        "table: all cars by score",
        "views/fleet_table.py",
        {},
        [("selectbox", "table.sort", "anomaly score (highest first)")],
    ),
    (
        "table: all cars by score, next page",
        "views/fleet_table.py",
        {},
        [
            ("selectbox", "table.sort", "anomaly score (highest first)"),
            ("button", "table.next", None),
        ],
    ),
    (
        "table: all cars by last seen",
        "views/fleet_table.py",
        {},
        [("selectbox", "table.sort", "last seen (oldest first)")],
    ),
    ("car detail", "views/car.py", {"car": "car4242"}, []),
    ("unknown car", "views/car.py", {"car": "car4242x"}, []),
    ("anomalies", "views/anomalies.py", {}, []),
]
#: Views that, in a fresh explorer process, need whole-fleet reads on SecantusDB (the fleet's
#: size, counted by the start-up warm-up; the first page by last seen, until its anchor is
#: known; by id and by score, only without ids from Kafka or anomalous cars): timed as a
#: fresh process shows them, opened at once and opened after the start-up warm-up.
FIRST_LOAD = [
    "overview",
    "fleet table (all cars by id)",
    "table: all cars by score",
    "table: all cars by last seen",
]


def fresh_process() -> None:
    """Forget what an explorer process learns as it runs (caches, anchors, fleet count)."""
    st.cache_data.clear()
    cached.warm_up.clear()
    anchors.ANCHORS.clear()
    fleet_count.forget()


def warm_up(settings: Settings) -> float:
    """Seconds the explorer's start-up warm-up takes (ui.cached.warm_up, here in this thread)."""
    twins = store.twins_collection(clients.mongo_database(settings), settings.twin.collection)
    where = (settings.mongodb_uri, settings.mongodb.database, settings.twin.collection)
    started = time.perf_counter()
    fleet_count.latest(where, twins.estimated_document_count, cached.SIZE_TTL_S)
    return time.perf_counter() - started


def seed(settings: Settings, size: int) -> float:
    collection = store.twins_collection(clients.mongo_database(settings), settings.twin.collection)
    collection.drop()
    store.ensure_indexes(collection)
    started = time.perf_counter()
    for first in range(1, size + 1, CHUNK):
        cars = min(CHUNK, size - first + 1)
        twins = simulated_twins(
            cars,
            steps=HISTORY,
            seed=first,
            failure_rate=0.2,
            scored=cars,
            first_car=first,
            scores_per_car=HISTORY,
        )
        collection.insert_many(twins, ordered=False)
        print(f"  inserted {first + cars - 1:,} twins", flush=True)
    return time.perf_counter() - started


#: Every this many cars (by number), one has its newest reading at the end of the telemetry
#: topic, as a live fleet's newest readings come from cars all over the fleet: the explorer
#: reads the fleet clock (and its sample of car ids) from there.
TAIL_EVERY = 50


def publish_tail(settings: Settings, size: int) -> int:
    """Put the newest reading of every `TAIL_EVERY`th seeded car (car1, car51, ...) on the
    telemetry topic, read back from their twins. Returns how many."""
    collection = store.twins_collection(clients.mongo_database(settings), settings.twin.collection)
    ids = [f"car{n}" for n in range(1, size + 1, TAIL_EVERY)]
    producer = clients.kafka_producer(settings)
    codec = telemetry_codec()
    published = 0
    for start in range(0, len(ids), store.IN_CHUNK):
        for twin in collection.find({"_id": {"$in": ids[start : start + store.IN_CHUNK]}}):
            last = twin["last_reading"]
            record = {name: entry["value"] for name, entry in twin["reported"].items()}
            record |= {
                "car_id": twin["_id"],
                "event_time": int(last["event_time"].timestamp() * 1000),
                "seq": last["seq"],
                "failure_occurred": None,
                "failure_modes": None,
            }
            producer.produce(settings.topics.telemetry, key=twin["_id"], value=codec.encode(record))
            published += 1
    producer.flush(30)
    return published


def render(settings: Settings, page: str, query: dict[str, str], changes: list[Any]) -> float:
    """Seconds for one page render (the page's script run, queries included)."""
    at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=300)
    at.session_state[SETTINGS_KEY] = settings
    at.switch_page(page)
    at.query_params.update(query)
    # Widgets start at their chosen values (through session state, as if the user had set
    # them); a button is clicked after one untimed run, and the timed run is the one it causes.
    for kind, key, value in changes:
        if kind != "button":
            at.session_state[key] = value
    for kind, key, _value in changes:
        if kind == "button":
            at.run()
            at.button(key=key).click()
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(f"{page}: {[e.message for e in at.exception]}")
    return elapsed


def measure(settings: Settings, runs: int) -> list[dict[str, Any]]:
    # Imports and first-use costs, not timed: each page once. First, each view as a fresh
    # explorer process shows it: opened the moment the explorer started (it waits for the
    # whole-fleet reads the warm-up has just begun), and opened once the warm-up is done.
    first_loads = []
    for name in FIRST_LOAD:
        _name, page, query, changes = next(sc for sc in SCENARIOS if sc[0] == name)
        fresh_process()
        at_once = render(settings, page, query, changes)
        fresh_process()
        warming = warm_up(settings)
        after = render(settings, page, query, changes)
        row = {
            "page": name,
            "opened_at_start_s": round(at_once, 3),
            "warm_up_s": round(warming, 3),
            "opened_after_warm_up_s": round(after, 3),
        }
        print(f"  first load: {row}", flush=True)
        first_loads.append(row)
    warmed: set[str] = set()
    for _name, page, query, changes in SCENARIOS:
        if page not in warmed:
            warmed.add(page)
            render(settings, page, query, changes)
    rows = []
    for name, page, query, changes in SCENARIOS:
        cold, warm = [], []
        for _ in range(runs):
            st.cache_data.clear()
            cold.append(render(settings, page, query, changes))
            warm.append(render(settings, page, query, changes))
        row = {
            "page": name,
            "cold_median_s": round(statistics.median(cold), 3),
            "cold_max_s": round(max(cold), 3),
            "warm_median_s": round(statistics.median(warm), 3),
        }
        print(f"  {name}: {row}", flush=True)
        rows.append(row)
    return rows, first_loads


def fmt_load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.1f}" for x in load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="twins to insert")
    parser.add_argument("--runs", type=int, default=5, help="renders per page and cache state")
    parser.add_argument("--external", action="store_true", help="use the configured stack")
    parser.add_argument(
        "--database", help="with --external: render against this already seeded database"
    )
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the stack below is always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack = None
    if not args.external:
        home = Path(tempfile.mkdtemp(prefix="fleet-bench-ui-"))
        os.environ.update(stack_environment(home))
        stack = Stack(Settings(), only=["kafka", "mongodb"])
        stack.up()
    configure_logging(Settings().log)
    base = Settings()
    database = args.database or f"bench_ui_{uuid.uuid4().hex[:6]}"
    settings = base.model_copy(
        update={"mongodb": base.mongodb.model_copy(update={"database": database})}
    )
    try:
        seeded = None
        if not args.database:
            print(f"seeding {args.size:,} twins …", flush=True)
            seeded = round(seed(settings, args.size), 1)
            print(f"  {publish_tail(settings, args.size):,} newest readings in Kafka", flush=True)
        print("rendering …", flush=True)
        load_before = os.getloadavg()
        rows, first_loads = measure(settings, args.runs)
    finally:
        if stack is not None:
            stack.down()
    result = {
        "benchmark": "ui_render",
        "twins": args.size,
        "runs_per_page": args.runs,
        "seed_seconds": seeded,
        "history_per_twin": HISTORY,
        "kafka_tail": f"the newest reading of every {TAIL_EVERY}th car (seeded runs)",
        "pages": rows,
        "first_loads": first_loads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "server": "SecantusDB 0.7.0b3 (MongoDB wire), indexes of twin.store.INDEXES",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work",
        "python": platform.python_version(),
        "streamlit": st.__version__,
        "caveat": "Indicative: a small machine shared with other jobs. Cold = Streamlit caches "
        "cleared before the run (every query hits the server, except the fleet's size, which "
        "a running explorer keeps fresh in the background); warm = the same page again "
        "within the cache TTL. Times are AppTest script runs (server-side render), not browser "
        "paint.",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ui.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Explorer render times with {args.size:,} twins",
        "",
        "| page | cold median (s) | cold max (s) | warm median (s) |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['page']} | {r['cold_median_s']} | {r['cold_max_s']} | {r['warm_median_s']} |"
            for r in rows
        ),
        "",
        "In a fresh explorer process (its start-up warm-up counts the twins in the background; "
        "the first page by id starts from car ids sampled from Kafka, by score from the "
        "anomalous cars):",
        "",
        "| page | opened at start (s) | warm-up (s) | opened after the warm-up (s) |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['page']} | {r['opened_at_start_s']} | {r['warm_up_s']} | "
            f"{r['opened_after_warm_up_s']} |"
            for r in first_loads
        ),
        "",
        result["caveat"],
        f"Load average (1, 5, 15 min) before the renders: {fmt_load(load_before)}; after: "
        f"{fmt_load(os.getloadavg())}.",
        "",
    ]
    (RESULTS / "ui.md").write_text("\n".join(lines))
    print((RESULTS / "ui.md").read_text())


if __name__ == "__main__":
    main()
