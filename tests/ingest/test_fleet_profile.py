"""The realistic fleet (`profile="fleet"`, the default): failures at a rate per car-hour that
develop and get repaired, a steady failing share, cars that differ. Fixed seeds, simulated
time only (the health rules against this fleet: tests/twin/test_health.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pytest

from fleet.contract import WHEELS
from ingest.cars.common import mode_kind
from ingest.cars.failures import MODE_WEIGHTS, mean_repair_hours, onset_rate
from ingest.simulator import FIRMWARE_CURRENT, FleetSimulator, ReadingBatch, SimulationConfig

HOUR_MS = 3_600_000
START_MS = SimulationConfig.start_time_ms


def fleet(hours: float, **config: object) -> Iterable[ReadingBatch]:
    cfg = SimulationConfig(**config)  # type: ignore[arg-type]
    return FleetSimulator(cfg).run(round(hours * HOUR_MS / cfg.interval_ms))


@dataclass
class Episode:
    """One failure of one car, as its readings show it."""

    car: int
    mode: str
    onset_ms: int
    seen: list[int] = field(default_factory=list)  # event times of the readings labelled with it
    ended_ms: int | None = None  # the first reading without it


def episodes(batches: Iterable[ReadingBatch]) -> tuple[list[Episode], list[ReadingBatch]]:
    """Every failure episode in a run (and the batches, for a closer look)."""
    open_: dict[tuple[int, str], Episode] = {}
    done: list[Episode] = []
    kept = []
    for batch in batches:
        kept.append(batch)
        for (car, mode), ep in list(open_.items()):
            if not batch.failures[mode][car] or batch.onsets[mode][car] != ep.onset_ms:
                ep.ended_ms = batch.event_time_ms
                done.append(open_.pop((car, mode)))
        for mode, active in batch.failures.items():
            for car in np.flatnonzero(active).tolist():
                ep = open_.setdefault((car, mode), Episode(car, mode, int(batch.onsets[mode][car])))
                ep.seen.append(batch.event_time_ms)
    return done + list(open_.values()), kept


def test_the_onset_rate_follows_from_the_failing_share_and_the_repair_times() -> None:
    config = SimulationConfig(failing_share=0.03, repair_hours=6.0, rollout_hours=12.0)
    mean_duration = float(MODE_WEIGHTS @ mean_repair_hours(config))
    assert mean_duration == pytest.approx(0.85 * 6 + 0.15 * 12)
    rate = onset_rate(config)
    assert rate * mean_duration / (1 + rate * mean_duration) == pytest.approx(0.03)
    assert onset_rate(SimulationConfig(failing_share=0.0)) == 0.0


@pytest.mark.parametrize(("share", "cars"), [(0.03, 2000), (0.10, 1000)])
def test_a_running_fleet_holds_its_failing_share(share: float, cars: int) -> None:
    """Over two simulated days, after every failure present at the start has been repaired
    (18 h: the longest a rollout takes), the share of cars with an active failure is the
    option's."""
    shares = [
        (batch.event_time_ms, batch.failure_occurred.mean())
        for batch in fleet(48, cars=cars, interval_ms=60_000, seed=3, failing_share=share)
    ]
    late = [s for t, s in shares if t >= START_MS + 18 * HOUR_MS]
    assert np.mean(late) == pytest.approx(share, rel=0.15)
    # It is a steady state, not a drift: the second day looks like the first's second half.
    second_day = [s for t, s in shares if t >= START_MS + 24 * HOUR_MS]
    assert np.mean(second_day) == pytest.approx(share, rel=0.2)
    assert shares[0][1] == pytest.approx(share, rel=0.3)  # it starts in the steady state


def test_the_default_fleet_has_about_three_percent_failing() -> None:
    batches = list(fleet(1, cars=1000))
    assert np.mean([b.failure_occurred.mean() for b in batches]) == pytest.approx(0.03, abs=0.01)


@pytest.mark.parametrize("interval_ms", [5_000, 120_000])
def test_the_onset_rate_does_not_depend_on_the_reading_interval(interval_ms: int) -> None:
    """Onsets per healthy car-hour are the configured rate whether cars report every 5 s or
    every 2 minutes (the seed's chances are per reading instead)."""
    config = {"cars": 2000, "interval_ms": interval_ms, "seed": 5, "failing_share": 0.5}
    onsets = 0
    healthy_hours = 0.0
    last_onset = np.full(2000, -1)
    for batch in fleet(4, **config):
        healthy_hours += (~batch.failure_occurred).sum() * interval_ms / HOUR_MS
        # One failure at a time: a car's onset changes when a new failure begins.
        onset = np.max(np.stack(list(batch.onsets.values())), axis=0)
        onsets += int(((onset > START_MS) & (onset != last_onset)).sum())
        last_onset = onset
    expected = onset_rate(SimulationConfig(**config))  # type: ignore[arg-type]
    assert onsets > 500
    assert onsets / healthy_hours == pytest.approx(expected, rel=0.1)


def test_a_tire_leaks_gradually_down_to_the_failing_range() -> None:
    found, batches = episodes(fleet(5, cars=400, seed=9, failing_share=0.3))
    leaks = [
        e
        for e in found
        if mode_kind(e.mode) == "tire_pressure" and e.onset_ms > START_MS and e.ended_ms is None
    ]
    assert len(leaks) >= 10
    by_time = {b.event_time_ms: b for b in batches}
    for leak in leaks:
        sensor = leak.mode  # tire_pressure_<wheel> is also the sensor's name
        psi = np.array([by_time[t].sensors[sensor][leak.car] for t in leak.seen])
        before = by_time[leak.seen[0] - 10_000].sensors[sensor][leak.car]
        assert 29 <= before <= 35
        steps = np.diff(np.concatenate([[before], psi]))
        assert steps.min() >= -2, "it leaks, it does not burst"
        if psi[-1] <= 24:  # fully developed: it went through the range in between
            assert len(np.unique(psi[(psi > 24) & (psi < before)])) >= 3
            reached = leak.seen[int(np.argmax(psi <= 24))]
            assert reached - leak.onset_ms >= 5 * 60_000
            assert np.all(psi[int(np.argmax(psi <= 24)) :] >= 19)
    assert any(by_time[e.seen[-1]].sensors[e.mode][e.car] <= 24 for e in leaks)


def test_shock_absorbers_wear_and_coolant_creeps_then_show_the_seed_signature() -> None:
    found, batches = episodes(fleet(6, cars=600, seed=4, failing_share=0.3))
    by_time = {b.event_time_ms: b for b in batches}
    kinds = {"shock_absorber": 0, "coolant": 0}
    for ep in found:
        kind = mode_kind(ep.mode)
        if kind not in kinds or ep.onset_ms <= START_MS or ep.seen[-1] - ep.onset_ms < 3 * HOUR_MS:
            continue
        kinds[kind] += 1
        early = [t for t in ep.seen if t - ep.onset_ms < 5 * 60_000]
        developed = [t for t in ep.seen if t - ep.onset_ms >= 3 * HOUR_MS]
        if kind == "shock_absorber":
            sensor = f"accelerometer_{ep.mode[-3:]}_value"
            assert np.median([by_time[t].sensors[sensor][ep.car] for t in early]) < 3.0
            assert all(by_time[t].sensors[sensor][ep.car] >= 3.0 for t in developed)
        else:
            # Early it heats as a healthy car does; developed, five times faster per ampere
            # without a radiator, so it runs hot.
            b = by_time[early[-1]]
            assert b.sensors["coolant_temp"][ep.car] < 120
            if by_time[developed[0]].sensors["current_draw"][ep.car] >= 5:
                assert by_time[developed[-1]].sensors["coolant_temp"][ep.car] >= 130
    assert kinds["shock_absorber"] >= 5 and kinds["coolant"] >= 5, kinds


def test_firmware_and_drive_shaft_fail_at_once() -> None:
    found, batches = episodes(fleet(3, cars=300, seed=2, failing_share=0.3))
    by_time = {b.event_time_ms: b for b in batches}
    kinds = set()
    for ep in found:
        b = by_time[ep.seen[0]]
        if ep.mode == "firmware":
            assert b.sensors["control_unit_firmware"][ep.car] == 1000
        elif ep.mode == "drive_shaft":
            speed = b.sensors["speed"][ep.car]
            assert b.sensors["engine_vibration_amplitude"][ep.car] == pytest.approx(150 * speed)
        else:
            continue
        kinds.add(ep.mode)
    assert kinds == {"firmware", "drive_shaft"}


def test_repairs_end_failures_and_restore_the_part() -> None:
    config = {
        "cars": 300,
        "seed": 6,
        "failing_share": 0.2,
        "repair_hours": 1.0,
        "rollout_hours": 2.0,
    }
    found, batches = episodes(fleet(10, **config))
    by_time = {b.event_time_ms: b for b in batches}
    end = batches[-1].event_time_ms
    longest = {"firmware": 1.5 * 2.0 * HOUR_MS}
    repaired = 0
    for ep in found:
        limit = longest.get(ep.mode, 1.5 * 1.0 * HOUR_MS)
        assert ep.seen[-1] - ep.onset_ms <= limit  # none outlives its repair
        if ep.onset_ms + limit + 10_000 < end:
            assert ep.ended_ms is not None, ep
        if ep.ended_ms is None:
            continue
        repaired += 1
        after = by_time[ep.ended_ms]
        assert not after.failure_occurred[ep.car] or ep.mode not in after.failure_modes()[ep.car]
        if mode_kind(ep.mode) == "tire_pressure":
            assert after.sensors[ep.mode][ep.car] >= 29
        elif ep.mode == "firmware":
            assert after.sensors["control_unit_firmware"][ep.car] == FIRMWARE_CURRENT
        elif mode_kind(ep.mode) == "shock_absorber":
            assert after.sensors[f"accelerometer_{ep.mode[-3:]}_value"][ep.car] < 3.0
    assert repaired >= 100
    assert {mode_kind(e.mode) for e in found if e.ended_ms} == {
        "tire_pressure",
        "shock_absorber",
        "drive_shaft",
        "coolant",
        "firmware",
    }


def test_labels_carry_each_active_modes_onset() -> None:
    for batch in fleet(1, cars=500, seed=8, failing_share=0.2):
        onsets = batch.failure_onsets()
        for i, modes in enumerate(batch.failure_modes()):
            assert set(onsets[i]) == set(modes)
            assert len(modes) <= 1  # one failure at a time
            for onset in onsets[i].values():
                assert onset <= batch.event_time_ms


def test_healthy_cars_differ_and_follow_the_day() -> None:
    batches = list(fleet(24, cars=200, seed=1, failing_share=0.0, interval_ms=60_000))
    sensors = {name: np.stack([b.sensors[name] for b in batches]) for name in batches[0].sensors}
    # Each car its own nominal tire pressure, all of them healthy.
    for wheel in WHEELS:
        per_car = sensors[f"tire_pressure_{wheel}"].mean(axis=0)
        assert per_car.max() - per_car.min() > 2
        assert sensors[f"tire_pressure_{wheel}"].min() >= 29
    # The intake air follows the ambient temperature: warm afternoons, cool nights.
    swing = sensors["intake_air_temp"].max(axis=0) - sensors["intake_air_temp"].min(axis=0)
    assert np.all((swing > 5) & (swing < 17))
    # Cars stop to charge (speed 0, battery rising) and never run flat.
    battery, speed = sensors["battery_percentage"], sensors["speed"]
    charging = (speed[1:] == 0) & (np.diff(battery, axis=0) > 0)
    assert charging.any(axis=0).mean() > 0.5
    assert battery.min() > 0.0 and battery.max() <= 1.0
    # The coolant runs near each car's own operating point, warmer on a warm day.
    assert sensors["coolant_temp"].max() < 120
