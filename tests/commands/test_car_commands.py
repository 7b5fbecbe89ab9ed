"""Simulated cars obeying commands (pure: a fake clock, no broker)."""

from __future__ import annotations

import json

import numpy as np

from ingest.car_commands import CarCommands, ObeyConfig, fate
from ingest.simulator import FleetSimulator, SimulationConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def message(version: int, firmware: int = 2000) -> bytes:
    return json.dumps({"version": version, "desired": {"firmware": firmware}}).encode()


def fleet(config: ObeyConfig) -> tuple[FleetSimulator, CarCommands, Clock]:
    sim = FleetSimulator(SimulationConfig(cars=40, profile="seed", failure_rate=30, seed=1))
    clock = Clock()
    return sim, CarCommands(sim.car_ids, config, clock), clock


def test_cars_report_the_update_after_the_delay_unless_they_fail_or_vanish() -> None:
    config = ObeyConfig(delay=5, failure_share=0.2, offline_share=0.1, seed=9)
    sim, cars, clock = fleet(config)
    sim.step()
    for car in sim.car_ids:
        cars.receive(car, message(1))
    fates = {car: fate(car, config) for car in sim.car_ids}
    assert {"ok", "fail", "offline"} == set(fates.values())
    offline = {c for c, f in fates.items() if f == "offline"}

    early = cars.apply(sim.step())
    assert set(early.car_ids) == set(sim.car_ids) - offline
    assert set(early.sensors["control_unit_firmware"].tolist()) == {1000}

    clock.now = 5.0
    later = cars.apply(sim.step())
    firmware = dict(
        zip(later.car_ids, later.sensors["control_unit_firmware"].tolist(), strict=True)
    )
    assert {c for c, v in firmware.items() if v == 2000} == {
        c for c, f in fates.items() if f == "ok"
    }
    assert {c for c, v in firmware.items() if v == 1000} == {
        c for c, f in fates.items() if f == "fail"
    }
    assert not np.any(later.failures["firmware"][later.sensors["control_unit_firmware"] == 2000])
    assert cars.updated == {c for c, f in fates.items() if f == "ok"}


def test_a_command_heard_twice_or_an_older_one_changes_nothing() -> None:
    sim, cars, _clock = fleet(ObeyConfig(delay=0))
    car = sim.car_ids[0]
    cars.receive(car, message(2, firmware=2100))
    cars.receive(car, message(1, firmware=1900))  # older, redelivered late
    cars.receive(car, message(2, firmware=2100))
    cars.receive("not-our-car", message(3))
    cars.receive(car, b"not json")
    batch = cars.apply(sim.step())
    assert batch.sensors["control_unit_firmware"][0] == 2100
    assert cars.versions == {car: 2}
