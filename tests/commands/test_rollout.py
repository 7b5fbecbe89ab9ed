"""A fleet-wide firmware rollout to simulated cars over the real stack, end to end:

cars --MQTT--> bridge --> Kafka --> projector --> twins      `fleet twin set --where ...`
  ^                                     |                              | command events
  +---MQTT vehicles/commands/<car>--- command service <-- twin changes <+ (Kafka)

then the twin-change events against the twins, and a rebuild from the topics.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from datetime import timedelta

import pytest

from fleet.avro import twin_change_codec
from fleet.service import Shutdown
from fleet.settings import Settings
from fleet.waiting import wait_for
from ingest.bridge import Bridge
from ingest.car_commands import CarCommands, ObeyConfig, fate
from ingest.outputs import MqttSink
from ingest.simulate import run_simulation
from ingest.simulator import FleetSimulator, SimulationConfig
from tests.commands.helpers import fleet, read_all, topic_total
from tests.ingest.helpers import short_lived
from tests.threads import running_in_thread
from tests.twin.kafka_helpers import (
    FAST_GROUP,
    all_twins,
    events_applied,
    running_projector,
    with_twin,
)
from twin import queries
from twin.changes import ChangeView, comparable_paths
from twin.command_service import CommandService
from twin.rebuild import rebuild
from twin.rollout import rollout_progress

pytestmark = pytest.mark.integration

CARS = 24
OBEY = ObeyConfig(delay=1.0, failure_share=0.15, offline_share=0.1, seed=5)


def fleet_with_both_failures(rng: random.Random) -> tuple[FleetSimulator, dict[str, str]]:
    """A fleet of car ids no other test uses (a random first id) among which the cars' fates
    include both kinds of failure (with 24 cars, about 1 first id in 12 has no offline car)."""
    for _ in range(100):
        first = rng.randrange(10**6, 10**7)
        # failure_rate 30: every car's firmware goes "outdated" (1000) from its second reading.
        simulator = FleetSimulator(
            SimulationConfig(
                cars=CARS,
                interval_ms=1000,
                profile="seed",
                failure_rate=30,
                seed=3,
                first_car=first,
            )
        )
        fates = {car: fate(car, OBEY) for car in simulator.car_ids}
        if {"fail", "offline"} <= set(fates.values()):
            return simulator, fates
    raise AssertionError("no fleet with both kinds of failure in 100 tries")


def test_a_fleet_wide_firmware_rollout_converges_and_the_topics_rebuild_it(
    stack_env: dict[str, str], fresh_settings: Settings
) -> None:
    settings = short_lived(with_twin(fresh_settings, batch_size=500, poll_timeout=0.2))
    simulator, fates = fleet_with_both_failures(random.Random())
    unhealthy = {car for car, f in fates.items() if f != "ok"}
    cars = CarCommands(simulator.car_ids, OBEY)
    twins = queries.twins(settings)

    sim_stop, service_stop = Shutdown(), Shutdown()
    service = CommandService(settings, **FAST_GROUP)
    sink = MqttSink(settings, qos=1, connections=1)
    with (
        Bridge(settings, client_id=f"bridge-{uuid.uuid4().hex[:6]}") as bridge,
        running_projector(settings),
        running_in_thread("commands", lambda: service.run(service_stop), service_stop),
    ):
        cars.connect(settings)
        driving = threading.Thread(
            target=run_simulation,
            args=(simulator, 100_000, sink),
            kwargs={"time_lapse": 4.0, "stop_requested": sim_stop.wait, "transform": cars.apply},
            daemon=True,
        )
        driving.start()
        try:
            wait_for(
                lambda: (
                    twins.count_documents({"reported.control_unit_firmware.value": 1000}) == CARS
                ),
                90,
                "every car reporting firmware 1000",
            )
            rollout = fleet(
                stack_env,
                settings,
                "twin",
                "set",
                "--where",
                "firmware=1000",
                "firmware=2000",
                "--wait",
            )
            assert rollout.returncode == 0, rollout.stderr
            assert f"firmware=2000 sent to {CARS} cars" in rollout.stdout
            assert f"{CARS} applied, 0 refused" in rollout.stdout

            def converged() -> bool:
                delta = {t["_id"]: t["delta"] for t in twins.find({}, {"delta": 1})}
                return all(delta[car] == {} for car in fates if car not in unhealthy)

            wait_for(converged, 90, "every healthy car reporting firmware 2000")
        finally:
            sim_stop.request()
            driving.join(60)
            sink.close()
            cars.close()
        assert not driving.is_alive()
        # Let the projector apply everything the cars sent before stopping it.
        wait_for(lambda: bridge.stats.in_flight == 0, 30, "the bridge to hand everything over")
        wait_for(
            lambda: (
                events_applied(settings)
                == topic_total(settings, settings.topics.telemetry)
                + topic_total(settings, settings.topics.commands)
            ),
            60,
            "the projector to apply every event",
        )
        wait_for(lambda: service.published >= CARS, 30, "the command service to send every command")

    assert cars.updated == {car for car, f in fates.items() if f == "ok"}
    assert cars.heard >= CARS
    live = all_twins(settings)
    for car, twin in live.items():
        assert twin["desired"]["firmware"]["value"] == 2000, car
        assert twin["desired_version"] == 1
        if car in unhealthy:
            assert twin["delta"] == {
                "firmware": {
                    "desired": 2000,
                    "reported": 1000,
                    "since": twin["desired"]["firmware"]["time"],
                }
            }, car
        else:
            assert twin["delta"] == {}, car
            assert twin["reported"]["control_unit_firmware"]["value"] == 2000

    check_failed_cars_listed(stack_env, settings, unhealthy)
    check_change_events(settings, live)
    check_rebuild(settings, live)


def check_failed_cars_listed(
    stack_env: dict[str, str], settings: Settings, unhealthy: set[str]
) -> None:
    """The failing cars are listed: by the query behind the explorer, and by the CLI."""
    twins = queries.twins(settings)
    progress = rollout_progress(twins, timeout=timedelta(0))
    assert progress.counts == {
        "done": CARS - len(unhealthy),
        "pending": 0,
        "failed": len(unhealthy),
    }
    assert {row["car"] for row in progress.cars["failed"]} == unhealthy
    shown = fleet(stack_env, settings, "twin", "rollout", "--timeout", "0", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {row["car"] for row in json.loads(shown.stdout)["cars"]["failed"]} == unhealthy


def check_change_events(settings: Settings, live: dict[str, dict]) -> None:
    """Following the twin-change events (dropping repeats by revision) reproduces the twins."""
    view = ChangeView()
    for event in read_all(settings, settings.topics.twin_changes, twin_change_codec()):
        view.apply(event)
    assert set(view.revisions) == set(live)
    for car, twin in live.items():
        assert view.revisions[car] == twin["revision"], car
        assert view.values[car] == comparable_paths(twin), car


def check_rebuild(settings: Settings, live: dict[str, dict]) -> None:
    """A rebuild from the topics reproduces desired, reported and delta: whole twins, exactly."""
    report = rebuild(settings)
    rebuilt = all_twins(settings)
    assert report.replayed == events_applied(settings)
    for car in live:
        for part in ("desired", "desired_version", "reported", "delta", "recent_commands"):
            assert rebuilt[car][part] == live[car][part], (car, part)
    assert rebuilt == live
