"""How to write a twin: a guarded replace of the whole document, or a guarded update that sets
only the paths that changed, each committed alone, or replaces committed a bulk at a time in
one transaction. Same twins, same server, same run; the server's CPU and the
client's time per twin write, in the live regime (each write carries one new reading).

    .venv/bin/python bench/twin_write.py                 # 2,000 twins x 5 rounds, bulks of 100

Both guard on `revision` and `positions` as twin/store.py does; both collections have the
twins' indexes. Starts its own MongoDB-wire server (the stack's default) on a free port and
writes bench/results/twin_write.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import psutil
from pymongo import ReplaceOne, UpdateOne

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.e2e import stack_server  # noqa: E402
from bench.twin_live import row, server_process  # noqa: E402
from fleet import clients  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.stack import Stack  # noqa: E402
from fleet.stack.ports import private_stack_environment  # noqa: E402
from twin import store  # noqa: E402
from twin.events import Envelope  # noqa: E402
from twin.fold import Twin, fold  # noqa: E402

RESULTS = HERE / "results"


def changed_paths(before: Twin, after: Twin) -> dict[str, Any]:
    """The top-level parts (and each `reported`/`counters` entry) that differ."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        if key in ("reported", "counters") and isinstance(before.get(key), dict):
            for name, entry in value.items():
                if before[key].get(name) != entry:
                    out[f"{key}.{name}"] = entry
        elif before.get(key) != value:
            out[key] = value
    return out


def next_twins(twins: dict[str, Twin], step: int) -> dict[str, tuple[Twin, Twin]]:
    """Each twin folded with one new reading: (before, after)."""
    out = {}
    for n, (car, twin) in enumerate(twins.items()):
        record = row(n, step, 1_700_000_000_000 + step * 10_000)
        record["car_id"] = car
        event = Envelope("t", 0, step, "telemetry", record)
        folded = fold(twin, car, [event]).twin
        assert folded is not None
        out[car] = (twin, folded)
    return out


def guard(before: Twin) -> dict[str, Any]:
    return {"_id": before["_id"], "revision": before["revision"], "positions": before["positions"]}


def run(  # noqa: PLR0917 (one measurement's parameters)
    collection: Any,
    server: psutil.Process,
    twins: dict[str, Twin],
    how: str,
    rounds: int,
    bulk: int,
    first_step: int,
) -> dict[str, Any]:
    cpu = wall = 0.0
    sent_bytes = 0
    writes = 0
    for step in range(first_step, first_step + rounds):
        pairs = next_twins(twins, step)
        operations: list[Any] = []
        for before, after in pairs.values():
            if how.startswith("replace"):
                operations.append(ReplaceOne(guard(before), after))
                sent_bytes += len(bson.encode(after))
            else:
                changes = changed_paths(before, after)
                operations.append(UpdateOne(guard(before), {"$set": changes}))
                sent_bytes += len(bson.encode({"$set": changes}))
        times = server.cpu_times()
        started_cpu = times.user + times.system
        started = time.perf_counter()
        for start in range(0, len(operations), bulk):
            piece = operations[start : start + bulk]
            if how.endswith("transaction"):  # one commit (one journal flush) per bulk
                client = collection.database.client
                with client.start_session() as session, session.start_transaction():
                    result = collection.bulk_write(piece, ordered=False, session=session)
            else:
                result = collection.bulk_write(piece, ordered=False)
            assert result.matched_count == len(piece)
        wall += time.perf_counter() - started
        times = server.cpu_times()
        cpu += times.user + times.system - started_cpu
        writes += len(operations)
        twins.update({car: after for car, (_before, after) in pairs.items()})
    stored = collection.find_one({"_id": next(iter(twins))})
    assert stored is not None and stored["revision"] == next(iter(twins.values()))["revision"]
    return {
        "how": how,
        "writes": writes,
        "server_cpu_us_per_write": round(cpu / writes * 1e6, 1),
        "wall_us_per_write": round(wall / writes * 1e6, 1),
        "bytes_sent_per_write": round(sent_bytes / writes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--twins", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bulk", type=int, default=100)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="twin-write-"))
    os.environ.update(private_stack_environment(home))
    stack = Stack(Settings(), ["mongodb"])
    stack.up()
    try:
        database = clients.mongo_database(Settings())
        server = server_process(stack)
        results: dict[str, Any] = {
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "server": stack_server(stack),
            "twins": args.twins,
            "bulk": args.bulk,
            "runs": [],
        }
        hows = ("replace", "set", "replace in a transaction")
        for how in hows * 2:  # twice each, interleaved
            collection = store.twins_collection(database, f"twins_{how.replace(' ', '_')}")
            store.ensure_indexes(collection)
            twins: dict[str, Twin] = {}
            for n in range(args.twins):
                car = f"car{n:06d}"
                first = fold(None, car, [Envelope("t", 0, 0, "telemetry", row(n, 0, 0))]).twin
                assert first is not None
                first["_id"] = first["car_id"] = car
                twins[car] = first
            collection.delete_many({})
            collection.insert_many(list(twins.values()))
            figures = run(collection, server, twins, how, args.rounds, args.bulk, first_step=1)
            results["runs"].append(figures)
            print(json.dumps(figures), flush=True)
        (RESULTS / "twin_write.json").write_text(json.dumps(results, indent=1) + "\n")
        lines = [
            "# Writing a twin: guarded replace vs guarded $set of the changed paths",
            "",
            f"{results['server']}, {args.twins:,} twins, bulks of {args.bulk}, {results['when']}; "
            "each write carries one new reading.",
            "",
            "| write | server CPU µs/write | client wall µs/write | bytes sent/write |",
            "| --- | ---: | ---: | ---: |",
        ]
        for f in results["runs"]:
            lines.append(
                f"| {f['how']} | {f['server_cpu_us_per_write']} | {f['wall_us_per_write']} | "
                f"{f['bytes_sent_per_write']} |"
            )
        (RESULTS / "twin_write.md").write_text("\n".join(lines) + "\n")
    finally:
        stack.down()


if __name__ == "__main__":
    main()
