"""The health rules on readings shaped like each failure mode of the seed's car model."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.contract import WHEELS
from ingest.simulator import ReadingBatch
from tests.twin.factories import STEP, reading
from twin import health


def active(current: dict, previous: dict | None = None) -> set[str]:
    return {key for key, verdict in health.evaluate(current, previous).items() if verdict}


def verdict(key: str, current: dict, previous: dict | None) -> bool | None:
    return health.evaluate(current, previous)[key]


def test_a_healthy_car_has_no_condition() -> None:
    assert active(reading(seq=1), reading(seq=0)) == set()


@pytest.mark.parametrize("wheel", WHEELS)
@pytest.mark.parametrize("psi", [20, 22, 24])
def test_tire_pressure_loss_is_low_pressure_on_that_wheel_only(wheel: str, psi: int) -> None:
    assert active(reading(**{f"tire_pressure_{wheel}": psi})) == {f"tire_pressure_low_{wheel}"}


@pytest.mark.parametrize("psi", [30, 34])
def test_healthy_pressures_are_not_low(psi: int) -> None:
    assert not verdict("tire_pressure_low_1_1", reading(tire_pressure_1_1=psi), None)


@pytest.mark.parametrize("wheel", WHEELS)
@pytest.mark.parametrize("accel", [3.0, 3.9, 5.0, 6.9])
def test_worn_shock_absorber_on_that_wheel(wheel: str, accel: float) -> None:
    assert active(reading(**{f"accelerometer_{wheel}_value": accel})) == {f"shock_absorber_{wheel}"}


@pytest.mark.parametrize("accel", [0.0, 0.99, 2.0, 2.99])
def test_healthy_wheel_even_on_a_bump(accel: float) -> None:
    assert not verdict("shock_absorber_2_1", reading(accelerometer_2_1_value=accel), None)


def test_drive_shaft_degradation_is_vibration_150_per_speed() -> None:
    assert active(reading(speed=30.0, engine_vibration_amplitude=4500.0)) == {
        "drive_shaft_vibration"
    }
    assert active(reading(speed=30.0, engine_vibration_amplitude=3000.0)) == set()


def test_drive_shaft_cannot_tell_when_standing_still() -> None:
    assert (
        verdict("drive_shaft_vibration", reading(speed=0.0, engine_vibration_amplitude=5), None)
        is None
    )


def test_coolant_overheating_is_a_fast_rise_per_ampere() -> None:
    before = reading(seq=0, coolant_temp=50.0, current_draw=20.0)
    healthy = reading(seq=1, coolant_temp=50.0 + 20.0 * 0.1, current_draw=20.0)
    overheating = reading(seq=1, coolant_temp=50.0 + 20.0 * 0.5, current_draw=20.0)
    assert verdict("coolant_overheating", healthy, before) is False
    assert verdict("coolant_overheating", overheating, before) is True
    assert active(overheating, before) == {"coolant_overheating"}


def test_coolant_cannot_tell_without_a_previous_reading_or_current_or_over_a_long_gap() -> None:
    before = reading(seq=0, coolant_temp=50.0, current_draw=20.0)
    hot = reading(seq=1, coolant_temp=60.0)
    assert verdict("coolant_overheating", hot, None) is None
    assert verdict("coolant_overheating", hot, before | {"current_draw": 0.5}) is None
    late = hot | {"event_time": before["event_time"] + 30 * 60 * 1000}
    assert verdict("coolant_overheating", late, before) is None
    same_time = hot | {"event_time": before["event_time"]}
    assert verdict("coolant_overheating", same_time, before) is None
    assert before["event_time"] + STEP == hot["event_time"]


def test_outdated_firmware() -> None:
    assert active(reading(control_unit_firmware=1000)) == {"firmware_outdated"}
    assert active(reading(control_unit_firmware=2000)) == set()


def test_figures_measured_on_the_seed_data() -> None:
    """car86 of the seed heats 0.505 degC per A per step at 57.9 A; car1's shaft runs at x150."""
    seed_before = reading(seq=0, coolant_temp=1500.0, current_draw=57.9)
    seed_after = reading(seq=1, coolant_temp=1500.0 + 57.9 * 0.505, current_draw=57.9)
    assert verdict("coolant_overheating", seed_after, seed_before) is True
    drive = reading(speed=24.934872, engine_vibration_amplitude=24.934872 * 150)
    assert verdict("drive_shaft_vibration", drive, None) is True


def test_hot_coolant_is_overheating_whatever_the_rate() -> None:
    saturated = reading(seq=1, coolant_temp=1500.0)
    assert verdict("coolant_overheating", saturated, saturated | {"seq": 0}) is True
    assert verdict("coolant_overheating", saturated, None) is True


def condition_kind(key: str) -> str:
    return key.rsplit("_", 2)[0] if key[-1].isdigit() else key


LABEL_TO_CONDITION = {
    "tire_pressure": "tire_pressure_low",
    "shock_absorber": "shock_absorber",
    "drive_shaft": "drive_shaft_vibration",
    "coolant": "coolant_overheating",
    "firmware": "firmware_outdated",
}


def test_rules_folded_over_the_simulator_agree_with_its_ground_truth() -> None:
    """Every failure mode of the seed profile, 300 cars x 120 steps: no false alarm, and
    (nearly) every failed part found: a car that stands still cannot show a worn drive shaft,
    and a car drawing little current overheats slowly."""
    from ingest.simulator import FleetSimulator, SimulationConfig
    from twin.events import Envelope
    from twin.fold import condition_key, fold

    simulator = FleetSimulator(SimulationConfig(cars=300, seed=11, profile="seed"))
    twins: dict[str, dict] = {}
    last: dict[str, dict] = {}
    offset = 0
    for batch in simulator.run(120):
        for record in batch.records():
            offset += 1
            car = record["car_id"]
            event = Envelope("telemetry", 0, offset, "telemetry", record)
            folded = fold(twins.get(car), car, [event]).twin
            assert folded is not None
            twins[car], last[car] = folded, record
    found: dict[str, list[bool]] = {kind: [] for kind in LABEL_TO_CONDITION.values()}
    for car, twin in twins.items():
        truth = set()
        for mode in last[car]["failure_modes"] or []:
            kind = condition_kind(mode)
            truth.add(mode.replace(kind, LABEL_TO_CONDITION[kind]))
        raised = {condition_key(c) for c in twin["health"]["conditions"]}
        assert raised <= truth, f"false alarm on {car}: {raised - truth}"
        for key in truth:
            found[condition_kind(key)].append(key in raised)
    for kind, hits in found.items():
        assert len(hits) >= 20, f"too few {kind} failures to judge"
        assert sum(hits) / len(hits) >= 0.9, f"{kind}: found {sum(hits)} of {len(hits)}"


def _fleet_columns(batch: ReadingBatch) -> dict[str, np.ndarray]:
    """A step of the simulator as the projector sees it (Avro floats are float32)."""
    columns = {
        name: values.astype(np.float32) if values.dtype.kind == "f" else values
        for name, values in batch.sensors.items()
    }
    columns["event_time"] = np.full(len(batch), batch.event_time_ms)
    return columns


@pytest.mark.parametrize(
    ("interval_ms", "hours", "cars"), [(1_000, 1, 200), (10_000, 6, 400), (60_000, 48, 300)]
)
def test_the_rules_never_fire_on_a_healthy_car_of_the_fleet_profile(
    interval_ms: int, hours: float, cars: int
) -> None:
    """The realistic fleet (cars that differ, day and night, charging stops, failures
    developing and repaired), every reading judged by the vectorised rules: a reading labelled
    healthy raises nothing; a failure developed for 3 hours (the longest development) is
    never cleared, and shows, except where a rule cannot tell (a parked car's drive shaft, a
    low-current car's coolant rate)."""
    from ingest.cars.common import mode_kind
    from ingest.simulator import FleetSimulator, SimulationConfig

    keys = [rule.key for rule in health.RULES]
    config = SimulationConfig(cars=cars, interval_ms=interval_ms, seed=21, failing_share=0.2)
    previous = None
    healthy_readings = 0
    shown: dict[str, list[int]] = {}
    for batch in FleetSimulator(config).run(round(hours * 3_600_000 / interval_ms)):
        now = _fleet_columns(batch)
        has_before = np.full(cars, previous is not None)
        matrix = health.verdict_matrix(health.Readings(now, previous or now, has_before))
        healthy = ~batch.failure_occurred
        healthy_readings += int(healthy.sum())
        alarms = {keys[j] for j in np.flatnonzero((matrix[healthy] == health.HOLDS).any(axis=0))}
        assert not alarms, f"false alarm at {batch.event_time_ms}: {alarms}"
        for mode, active in batch.failures.items():
            kind = mode_kind(mode)
            developed = active & (batch.event_time_ms - batch.onsets[mode] >= 3 * 3_600_000)
            column = matrix[developed, keys.index(mode.replace(kind, LABEL_TO_CONDITION[kind]))]
            assert np.all(column != health.CLEAR), f"{mode} cleared though developed"
            shown.setdefault(kind, []).extend((column == health.HOLDS).tolist())
        previous = now
    assert healthy_readings > 0.7 * cars * hours * 3_600_000 / interval_ms
    for kind, hits in shown.items():
        assert len(hits) >= 100, f"too few developed {kind} readings to judge"
        assert np.mean(hits) >= (0.75 if kind in ("drive_shaft", "coolant") else 1.0), kind


def test_twins_of_the_fleet_profile_raise_what_is_developed_and_nothing_else() -> None:
    """The fold itself over the realistic fleet: a car that never failed keeps a twin without
    conditions; a failure developed for 3 hours is on the twin."""
    from ingest.simulator import FleetSimulator, SimulationConfig
    from twin.events import Envelope
    from twin.fold import condition_key, fold

    simulator = FleetSimulator(SimulationConfig(cars=100, seed=12, failing_share=0.3))
    twins: dict[str, dict] = {}
    ever_failed: set[str] = set()
    offset = 0
    batch = None
    for batch in simulator.run(240):
        for record in batch.records():
            offset += 1
            car = record["car_id"]
            if record["failure_occurred"]:
                ever_failed.add(car)
            event = Envelope("telemetry", 0, offset, "telemetry", record)
            folded = fold(twins.get(car), car, [event]).twin
            assert folded is not None
            twins[car] = folded
    assert batch is not None
    never = set(twins) - ever_failed
    assert len(never) >= 30
    for car in never:
        assert twins[car]["health"]["conditions"] == [], car
    developed = 0
    for i, car in enumerate(batch.car_ids):
        for mode, onset in batch.failure_onsets()[i].items():
            kind = condition_kind(mode)
            if batch.event_time_ms - onset < 3 * 3_600_000 or kind in ("drive_shaft", "coolant"):
                continue  # those two cannot always tell (see above)
            developed += 1
            raised = {condition_key(c) for c in twins[car]["health"]["conditions"]}
            assert mode.replace(kind, LABEL_TO_CONDITION[kind]) in raised, (car, mode)
    assert developed >= 5
