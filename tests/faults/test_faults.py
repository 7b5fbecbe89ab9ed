"""The fault suite: under steady simulated load over MQTT, one fault at a time, then nothing
lost or doubled and the twins equal a clean rebuild.

One PRIVATE stack (its own Kafka, MongoDB-wire server, Mosquitto and GCS emulator on free
ports, so restarting them does not disturb the session stack other tests use) and one set of
services as real `fleet` processes (bridge, twin projector, lake archiver, scorer) serve the
whole module; the cases run in sequence, each on top of the state the previous ones left.

Each case: the cars publish a step every ``PERIOD`` seconds; once the pipeline visibly works,
the fault is injected and repaired; "time to recover" runs from the repair until every
reading PUBACKed at that moment is in Kafka, on the twins, scored, and in the lake, with its
score on the twins and in the lake too (every consumer group committed past it). Then the
load stops, the pipeline drains, and the checks run (``Ledger.reconcile``, cumulative):

* every PUBACKed reading is in Kafka, and nothing else is;
* every Kafka event is applied to its twin exactly once (a twin's revision = its car's
  events in Kafka) and each distinct reading is counted once (``readings_applied``);
* every reading is scored by the promoted model, and each twin holds its newest reading's score;
* the lake holds each event of both topics exactly once;
* dead letters = bad inputs, reason by reason;
* the twins equal a clean rebuild (`fleet twin rebuild` into a fresh collection), field for
  field: no field is ignored (bookkeeping included: revision, positions, counters).

The table (events in, on twins, in lake, dead-lettered, time to recover) is written to
``bench/results/faults.md`` and ``faults.json`` and printed at the end.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from fleet.settings import Settings
from fleet.stack import Stack
from fleet.stack.ports import free_port, private_stack_environment
from fleet.stack.process import read_pidfile
from fleet.waiting import wait_for
from tests.e2e.pipeline import (
    Cars,
    Counts,
    Gateway,
    Ledger,
    Service,
    ServiceDied,
    bad_inputs,
    bridge_idle,
    environment,
    rebuild_differences,
    service_env,
    train_and_promote,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

CARS = 30
PERIOD = 0.25  # seconds between steps of the fleet: 120 readings/s
GCS_OUTAGE = 30.0  # seconds without GCS (the figure)
BURST = 20  # bad inputs of every kind in the burst case
DEADLINE = 180.0  # for each wait of a case
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@dataclass
class Platform:
    settings: Settings
    env: dict[str, str]
    services: dict[str, Service]
    cars: Cars
    gateway: Gateway
    ledger: Ledger
    bridge_port: int
    version: str
    counts: Counts
    rows: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def check_services(self) -> None:
        for service in self.services.values():
            service.check()

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
        """wait_for, failing at once if a service died meanwhile."""

        def ready() -> Any:
            self.check_services()
            return condition()

        wait_for(ready, timeout, what, interval=0.2, fatal=(ServiceDied,))


def private_settings(home: Path) -> tuple[Settings, dict[str, str]]:
    stack_env = private_stack_environment(home) | {"FLEET_KAFKA_HEAP": "-Xms256m -Xmx768m"}
    with environment(stack_env):
        settings = Settings()
    s = settings
    settings = s.model_copy(
        update={
            # Thin, frequent lake objects so the lake catches up within seconds.
            "lake": s.lake.model_copy(update={"flush_seconds": 2.0, "retry_max_seconds": 2.0}),
            "ml": s.ml.model_copy(update={"stream_timeout_ms": 3000}),
            "twin": s.twin.model_copy(update={"max_backoff": 2.0}),
            # Servers start slowly on a machine shared with other stacks.
            "stack": s.stack.model_copy(update={"start_timeout": 240.0}),
        }
    )
    return settings, stack_env


@pytest.fixture(scope="module")
def platform_under_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("fault-stack")
    settings, stack_env = private_settings(home)
    stack = Stack(settings)
    stack.up()
    env = service_env(stack_env, settings) | {
        "FLEET_TWIN_MAX_BACKOFF": "2",
        "FLEET_LOG_LEVEL": "INFO",
    }
    port = free_port()
    logs = home / "logs"
    logs.mkdir()
    services = {
        "bridge": Service("bridge", ["bridge", f"--metrics-port={port}"], env, logs / "bridge.log"),
        "projector": Service("projector", ["twin", "run"], env, logs / "projector.log"),
        "archiver": Service("archiver", ["lake", "run"], env, logs / "archiver.log"),
        "scorer": Service("scorer", ["ml", "score"], env, logs / "scorer.log"),
    }
    cars: Cars | None = None
    gateway: Gateway | None = None
    ledger: Ledger | None = None
    platform_: Platform | None = None
    try:
        for service in services.values():
            service.start()
        services["bridge"].wait_logged("subscribed", 90)
        cars = Cars(settings, cars=CARS, connections=2)
        gateway = Gateway(settings)
        ledger = Ledger(settings)
        for _ in range(20):
            cars.step()
        wait_for(cars.all_answered, 60, "PUBACKs")
        acked = cars.acked()
        wait_for(lambda: acked <= ledger.in_kafka(), 60, "the first readings in Kafka")
        version = train_and_promote(env, settings.ml.model_name)
        services["scorer"].wait_logged("model loaded", 180)
        ledger.wait_quiet(cars, gateway, port, DEADLINE)
        counts = ledger.reconcile(cars, gateway, version)
        assert counts.problems == []
        platform_ = Platform(settings, env, services, cars, gateway, ledger, port, version, counts)
        yield platform_
    finally:
        if platform_ is not None and platform_.rows:
            write_table(platform_.rows)
        for closable in (cars, gateway, ledger):
            if closable is not None:
                closable.close()
        codes = {name: service.stop() for name, service in services.items()}
        stack.down()
    assert codes == dict.fromkeys(services, 0), {n: services[n].tail() for n in services}


# --- the faults ---------------------------------------------------------------------------


def restart_service(name: str) -> Callable[[Platform], None]:
    def inject(p: Platform) -> None:
        service = p.services[name]
        service.kill9()
        service.start()

    return inject


def restart_server(name: str, kill: bool = False) -> Callable[[Platform], None]:
    """Stop a server of the private stack (SIGTERM, or SIGKILL) and start it again."""

    def inject(p: Platform) -> None:
        stack = Stack(p.settings, only=[name])
        if kill:
            service = next(s for s in stack.services if s.name == name)
            record = read_pidfile(service.pidfile)
            assert record is not None
            process = record.process()
            assert process is not None
            process.kill()
            psutil.wait_procs([process], timeout=30)
        else:
            stack.down()
        stack.up()

    return inject


def mosquitto_restart(p: Platform) -> None:
    """Mosquitto 2.0.11 does not deliver to a persistent session what is published after the
    broker restarted until that client has reconnected and subscribed again (tried with plain
    and shared subscriptions): readings published in that window are PUBACKed and lost. So the
    cars pause from just before the restart until the bridge has subscribed again; everything
    acknowledged before, and queued for the bridge, must come through."""
    p.cars.stop()
    p.wait(p.cars.all_answered, "every reading PUBACKed before the restart")
    p.wait(lambda: bridge_idle(p.bridge_port), "the bridge to hold nothing")
    bridge = p.services["bridge"]

    def subscriptions() -> int:
        return sum(1 for e in bridge.events() if e.get("event") == "subscribed")

    before = subscriptions()
    stack = Stack(p.settings, only=["mosquitto"])
    stack.down()
    stack.up()
    p.wait(lambda: subscriptions() > before, "the bridge to subscribe again")
    p.cars.start(PERIOD)


def gcs_outage(p: Platform) -> None:
    stack = Stack(p.settings, only=["gcs"])
    stack.down()
    # The fault itself lasts this long (load keeps coming); nothing waits on it.
    threading.Event().wait(GCS_OUTAGE)
    p.check_services()
    stack.up()


def bad_burst(p: Platform) -> None:
    p.gateway.send([m for n in range(BURST) for m in bad_inputs(f"car{1 + n % CARS}")])


@dataclass(frozen=True)
class Case:
    name: str
    fault: str
    inject: Callable[[Platform], None]


CASES = [
    # First, so the dead-letter topic is not empty when Kafka restarts: run last, all 180
    # letters were in Kafka within a second, but the ledger's tail (assigned at the beginning
    # of a then-empty topic) saw none of them in 180 s after the broker restart.
    Case("bad-input", f"a burst of every bad-input kind x{BURST}", bad_burst),
    Case("bridge", "kill -9 `fleet bridge`, restart", restart_service("bridge")),
    Case("projector", "kill -9 `fleet twin run`, restart", restart_service("projector")),
    Case("archiver", "kill -9 `fleet lake run`, restart", restart_service("archiver")),
    Case("scorer", "kill -9 `fleet ml score`, restart", restart_service("scorer")),
    Case("kafka", "restart Kafka (SIGTERM, start)", restart_server("kafka")),
    Case("mongodb", "kill -9 the MongoDB-wire server, start", restart_server("mongodb", True)),
    Case(
        "mosquitto",
        "restart Mosquitto (SIGTERM, start; cars paused until the bridge re-subscribed)",
        mosquitto_restart,
    ),
    Case("gcs", f"GCS unavailable for {GCS_OUTAGE:.0f} s", gcs_outage),
]


def recover(p: Platform, repaired_at: float) -> float:
    """Seconds from the repair until everything PUBACKed by then went all the way through."""
    acked = p.cars.acked()
    bad = p.gateway.sent
    ledger, t, g, o = p.ledger, p.settings.topics, p.settings.groups, p.ledger.offsets
    p.wait(lambda: acked <= ledger.in_kafka(), "PUBACKed readings in Kafka")
    p.wait(lambda: len(ledger.letters.poll()) >= bad, "dead letters")

    def all_past(groups: tuple[str, ...], topic: str) -> None:
        ends: dict[int, int] = {}
        p.wait(lambda: ends.update(o.ends(topic)) or ends, f"the ends of {topic}")

        def past() -> bool:
            return all(o.caught_up(group, topic, ends) for group in groups)

        p.wait(past, f"{', '.join(groups)} past the ends of {topic}")

    all_past((g.scorer, g.twin, g.lake), t.telemetry)
    all_past((g.twin, g.lake), t.anomalies)
    return time.monotonic() - repaired_at


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(platform_under_test: Platform, case: Case) -> None:
    p = platform_under_test
    before, published, bad = p.counts, p.cars.published, p.gateway.sent
    p.cars.start(PERIOD)
    row: dict[str, Any] = {"case": case.name, "fault": case.fault}
    try:
        # Under load: the readings of this case are flowing through before the fault.
        p.wait(lambda: len(p.ledger.in_kafka()) >= before.distinct_in_kafka + 4 * CARS, "load")
        case.inject(p)
        row["recover_s"] = round(recover(p, time.monotonic()), 1)
    finally:
        p.cars.stop()
    stopped = time.monotonic()
    p.ledger.wait_quiet(p.cars, p.gateway, p.bridge_port, DEADLINE)
    p.check_services()
    drained = time.monotonic()
    counts, differences = checked(p)
    row["drain_s"] = round(drained - stopped, 1)
    row["check_s"] = round(time.monotonic() - drained, 1)
    row |= p.timings
    p.counts = counts
    row |= {
        "events_in": p.cars.published - published,
        "bad_in": p.gateway.sent - bad,
        "on_twins": counts.on_twins - before.on_twins,
        "in_lake": counts.distinct_in_lake - before.distinct_in_lake,
        "lake_events": counts.in_lake - before.in_lake,
        "dead_lettered": counts.dead_letters - before.dead_letters,
        "late": counts.late - before.late,
        "redelivered": (counts.in_kafka - counts.distinct_in_kafka)
        - (before.in_kafka - before.distinct_in_kafka),
        "rebuild_equal": not differences,
        "problems": counts.problems + differences[:10],
    }
    p.rows.append(row)
    assert counts.problems == []
    assert differences == []
    assert row["events_in"] == row["on_twins"] == row["in_lake"] > 0
    assert row["dead_lettered"] == row["bad_in"]


def checked(p: Platform) -> tuple[Counts, list[str]]:
    """Reconcile and compare with a rebuild at a moment nothing moves (the topics' ends are
    the same before and after); a late redelivery in between means: look again."""
    for _ in range(3):
        cut = p.ledger.cut()
        started = time.monotonic()
        counts = p.ledger.reconcile(p.cars, p.gateway, p.version)
        p.timings["reconcile_s"] = round(time.monotonic() - started, 1)
        differences = rebuild_differences(p.settings, p.env, cli=False)
        p.timings["rebuild_s"] = round(time.monotonic() - started, 1) - p.timings["reconcile_s"]
        if p.ledger.cut() == cut:
            return counts, differences
        p.ledger.wait_quiet(p.cars, p.gateway, p.bridge_port, DEADLINE)
    raise AssertionError("the platform never stood still for a check")


def test_the_fault_table_is_written(
    platform_under_test: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    """(Runs last.) Every case produced a row; the table is on disk, and printed."""
    p = platform_under_test
    text = write_table(p.rows)
    with capsys.disabled():
        print("\n" + text)
    assert [r["case"] for r in p.rows] == [c.name for c in CASES]
    assert (RESULTS / "faults.json").exists()


# --- the table ----------------------------------------------------------------------------

COLUMNS = [
    ("case", "case"),
    ("fault", "fault"),
    ("events_in", "events in"),
    ("on_twins", "on twins"),
    ("in_lake", "in lake"),
    ("bad_in", "bad in"),
    ("dead_lettered", "dead-lettered"),
    ("redelivered", "redelivered"),
    ("late", "late"),
    ("recover_s", "recover (s)"),
    ("rebuild_equal", "twins = rebuild"),
]


def write_table(rows: list[dict[str, Any]]) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "python": platform.python_version(),
        "system": platform.platform(),
    }
    report: dict[str, Any] = {
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load": {"cars": CARS, "step_period_s": PERIOD, "readings_per_s": CARS / PERIOD},
        "columns": {
            "events_in": "readings published (PUBACKed) during the case",
            "on_twins": "readings counted on the twins during the case (applied, or late "
            "when a newer reading of the car came first)",
            "in_lake": "distinct readings added to the lake during the case",
            "bad_in": "bad inputs sent during the case",
            "dead_lettered": "dead letters added during the case",
            "redelivered": "duplicate readings in Kafka (bridge redeliveries), absorbed downstream",
            "recover_s": "from the repair until every reading PUBACKed by then is in Kafka, "
            "scored, on the twins and in the lake (every consumer group committed past it)",
            "rebuild_equal": "twins equal `fleet twin rebuild` into a fresh collection, every "
            "field compared (no field ignored)",
        },
        "cases": rows,
    }
    (RESULTS / "faults.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Fault suite",
        "",
        f"Written by `pytest -m fault` (`tests/faults/test_faults.py`) on "
        f"{report['written']}; {CARS} cars publishing {CARS / PERIOD:.0f} readings/s over "
        f"MQTT (QoS 1); one private stack and one set of services for all cases, in order. "
        f"Machine: {machine['cpus']} cores, load average {machine['load_average']} at the end "
        "(shared with other work: times are indicative).",
        "",
        "| " + " | ".join(title for _k, title in COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for row in rows:
        cells = []
        for key, _title in COLUMNS:
            value = row.get(key, "")
            if isinstance(value, bool):
                value = "yes" if value else "NO"
            cells.append(f"{value:,}" if isinstance(value, int) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""]
    lines += [f"- `{k}`: {v}" for k, v in report["columns"].items()]
    problems = [f"- {r['case']}: {p}" for r in rows for p in r.get("problems", [])]
    lines += ["", "Problems: none." if not problems else "Problems:", *problems, ""]
    text = "\n".join(lines)
    (RESULTS / "faults.md").write_text(text)
    return text
