"""What desired state and twin-change events cost the projector, and how fast commands apply.

    .venv/bin/python bench/commands_changes.py [--cars 2000] [--readings 10] [--running]

* changes off vs on: the same readings projected twice into fresh databases, once with
  `twin.emit_changes=false`, once with change events (produced after each write, confirmed by
  Kafka before the commit).
* commands: one firmware command per car (as a rollout sends them), then the time until every
  twin has applied it, with change events on.

Starts its own stack on free ports (or, with --running, uses the one FLEET_* points at).
Figures are indicative: 2 shared cores, other work running on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fleet import clients  # noqa: E402
from fleet.service import Shutdown  # noqa: E402
from fleet.settings import Settings  # noqa: E402
from fleet.stack.ports import private_stack_environment  # noqa: E402
from fleet.topics import create_topics, topic_specs  # noqa: E402
from fleet.waiting import wait_for  # noqa: E402
from ingest.outputs import KafkaSink  # noqa: E402
from ingest.simulate import run_simulation  # noqa: E402
from ingest.simulator import FleetSimulator, SimulationConfig  # noqa: E402
from twin import commands  # noqa: E402
from twin.projector import Projector  # noqa: E402

FAST_GROUP = {"session.timeout.ms": "6000"}


def isolated(settings: Settings, emit_changes: bool) -> Settings:
    """Own database and group (the topics are shared by the runs: the same events)."""
    suffix = uuid.uuid4().hex[:6]
    return settings.model_copy(
        update={
            "groups": settings.groups.model_copy(update={"twin": f"bench-{suffix}"}),
            "mongodb": settings.mongodb.model_copy(update={"database": f"bench_{suffix}"}),
            "twin": settings.twin.model_copy(update={"emit_changes": emit_changes}),
        }
    )


def applied(settings: Settings) -> int:
    twins = clients.mongo_database(settings)[settings.twin.collection]
    rows = list(twins.aggregate([{"$group": {"_id": None, "n": {"$sum": "$revision"}}}]))
    return int(rows[0]["n"]) if rows else 0


def project(settings: Settings, total: int, new: int | None = None) -> dict[str, float]:
    """Run a projector until ``total`` events are on the twins (``new`` of them not yet)."""
    new = total if new is None else new
    shutdown = Shutdown()
    projector = Projector(settings, shutdown, **FAST_GROUP)
    thread = threading.Thread(target=projector.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    wait_for(lambda: applied(settings) >= total, 1800, f"{total} events", interval=0.2)
    seconds = time.perf_counter() - started
    shutdown.request()
    thread.join(60)
    changes = projector.changes.produced if projector.changes else 0
    return {
        "events": new,
        "seconds": round(seconds, 2),
        "events_per_s": round(new / seconds),
        "change_events": changes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cars", type=int, default=2000)
    parser.add_argument("--readings", type=int, default=10, help="readings per car")
    parser.add_argument("--running", action="store_true", help="use the stack FLEET_* names")
    args = parser.parse_args()
    stack = None
    if not args.running:
        from fleet.stack import Stack

        os.environ.update(private_stack_environment(Path(tempfile.mkdtemp(prefix="cmd-bench-"))))
        stack = Stack(Settings(), ["kafka", "mongodb"])
        stack.up()
    try:
        base = Settings()
        suffix = uuid.uuid4().hex[:6]
        topics = base.topics.model_copy(
            update={
                name: f"bench.{name}.{suffix}"
                for name in ("telemetry", "anomalies", "commands", "twin_changes")
            }
        )
        base = base.model_copy(update={"topics": topics})
        create_topics(clients.kafka_admin(base), topic_specs(base))
        sink = KafkaSink(base)
        simulator = FleetSimulator(SimulationConfig(cars=args.cars, seed=1))
        run_simulation(simulator, args.readings, sink)
        sink.close()
        total = args.cars * args.readings
        results: dict[str, Any] = {
            "cars": args.cars,
            "readings_per_car": args.readings,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average": round(os.getloadavg()[0], 1),
        }
        results["changes_off"] = project(isolated(base, False), total)
        on = isolated(base, True)
        results["changes_on"] = project(on, total)
        results["overhead_pct"] = round(
            100
            * (1 - results["changes_on"]["events_per_s"] / results["changes_off"]["events_per_s"]),
            1,
        )
        _rollout, batch = commands.for_fleet(
            clients.mongo_database(on)[on.twin.collection], "firmware", 2001, {}
        )
        started = time.perf_counter()
        commands.send(on, batch, timeout=120)
        results["commands"] = project(on, total + len(batch), len(batch))
        results["commands"]["seconds_from_send"] = round(time.perf_counter() - started, 2)
    finally:
        if stack is not None:
            stack.down()
    out = HERE / "results" / "commands.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
