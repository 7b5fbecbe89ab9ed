"""The vectorized car model: determinism and the contract (both profiles); the seed profile's
physics, failure modes and labels (the realistic fleet: test_fleet_profile.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fleet.avro import telemetry_codec
from fleet.contract import FAILURE_MODES, PHYSICAL_RANGES, SENSOR_TYPES, SENSORS, WHEELS
from ingest.simulator import FleetSimulator, SimulationConfig


def run(steps: int, **config: object) -> list:
    """The seed profile: the original demo's per-step rules."""
    config.setdefault("profile", "seed")
    return list(FleetSimulator(SimulationConfig(**config)).run(steps))  # type: ignore[arg-type]


@pytest.mark.parametrize("profile", ["seed", "fleet"])
def test_same_seed_same_readings_other_seed_other_readings(profile: str) -> None:
    first = [r for b in run(5, cars=50, seed=7, profile=profile) for r in b.records()]
    again = [r for b in run(5, cars=50, seed=7, profile=profile) for r in b.records()]
    other = [r for b in run(5, cars=50, seed=8, profile=profile) for r in b.records()]
    assert first == again
    assert first != other


@pytest.mark.parametrize("profile", ["seed", "fleet"])
def test_event_time_and_sequence_advance_by_one_interval_per_step(profile: str) -> None:
    batches = run(4, cars=3, interval_ms=10_000, start_time_ms=1_000, profile=profile)
    assert [b.event_time_ms for b in batches] == [1_000, 11_000, 21_000, 31_000]
    assert [b.seq for b in batches] == [0, 1, 2, 3]
    assert batches[0].car_ids == ["car1", "car2", "car3"]


@pytest.mark.parametrize("profile", ["seed", "fleet"])
def test_records_follow_the_telemetry_contract(profile: str) -> None:
    codec = telemetry_codec()
    for record in run(2, cars=20, profile=profile)[1].records():
        assert set(record) == {
            "car_id",
            "event_time",
            "seq",
            *SENSORS,
            "failure_occurred",
            "failure_modes",
        }
        for name, kind in SENSOR_TYPES.items():
            assert type(record[name]) is kind, name
        assert codec.decode(codec.encode(record))["car_id"] == record["car_id"]


def test_seed_physics_speed_battery_and_vibration() -> None:
    sim = FleetSimulator(
        SimulationConfig(
            cars=1000,
            profile="seed",
            throttle_change_chance=0.0,
            failure_rate=0.0,
            recharge_below=-1e9,
        )
    )
    before, after = sim.step().sensors, sim.step().sensors
    target = after["throttle_pos"] * 38.9
    np.testing.assert_allclose(after["speed"], 0.8 * before["speed"] + 0.2 * target, rtol=1e-9)
    np.testing.assert_allclose(
        after["battery_percentage"], before["battery_percentage"] - 0.008 * before["speed"]
    )
    np.testing.assert_allclose(after["engine_vibration_amplitude"], 100 * after["speed"])
    assert np.all(after["control_unit_firmware"] == 2000)
    for wheel in WHEELS:
        pressure = after[f"tire_pressure_{wheel}"]
        assert np.all((pressure >= 30) & (pressure <= 34))


def test_each_failure_mode_shows_in_the_sensors_it_breaks() -> None:
    batches = run(60, cars=2000, failure_rate=3.0, seed=1)
    last, previous = batches[-1], batches[-2]
    f, s = last.failures, last.sensors
    for wheel in WHEELS:
        flat = f[f"tire_pressure_{wheel}"]
        assert flat.any() and (~flat).any()
        pressure = s[f"tire_pressure_{wheel}"]
        assert np.all((pressure[flat] >= 20) & (pressure[flat] <= 24))
        assert np.all(pressure[~flat] >= 30)
        broken = f[f"shock_absorber_{wheel}"]
        assert broken.any()
        assert np.all(s[f"accelerometer_{wheel}_value"][broken] >= 3.0)
        assert np.all(s[f"accelerometer_{wheel}_value"][~broken] < 3.0)
    shaft = f["drive_shaft"]
    np.testing.assert_allclose(s["engine_vibration_amplitude"][shaft], 150 * s["speed"][shaft])
    assert np.all(s["control_unit_firmware"][f["firmware"]] == 1000)
    # Overheating cars keep heating; healthy ones are held near the radiator's set point.
    hot = f["coolant"] & previous.failures["coolant"]
    assert hot.any()
    rising = s["coolant_temp"][hot] > previous.sensors["coolant_temp"][hot]
    saturated = s["coolant_temp"][hot] >= 1500.0
    assert np.all(rising | saturated)
    assert np.median(s["coolant_temp"][hot]) > 2 * np.median(s["coolant_temp"][~f["coolant"]])


def test_failures_stay_on_once_they_fire() -> None:
    batches = run(30, cars=500, failure_rate=2.0)
    for earlier, later in itertools.pairwise(batches):
        for mode in FAILURE_MODES:
            assert np.all(later.failures[mode][earlier.failures[mode]])


def test_failure_incidence_matches_the_seed_chances() -> None:
    # After one transition, each mode has fired with its per-step chance.
    second = run(2, cars=100_000, seed=3)[1]
    expected = {
        "drive_shaft": 0.01,
        "coolant": 0.002,
        "firmware": 0.04,
        "shock_absorber_1_1": 0.01,
        "tire_pressure_2_2": 0.005,
    }
    for mode, chance in expected.items():
        observed = second.failures[mode].mean()
        sigma = np.sqrt(chance * (1 - chance) / 100_000)
        assert abs(observed - chance) < 5 * sigma, (mode, observed)


def test_labels_match_the_failure_state() -> None:
    batches = run(40, cars=300, failure_rate=2.0)
    batch = batches[-1]
    onsets = batch.failure_onsets()
    for i, (record, occurred) in enumerate(
        zip(batch.records(), batch.failure_occurred, strict=True)
    ):
        assert record["failure_occurred"] == bool(occurred)
        assert record["failure_occurred"] == bool(record["failure_modes"])
        for mode in record["failure_modes"]:
            assert batch.failures[mode][batch.car_ids.index(record["car_id"])]
        # The onset is the reading at which the mode first showed.
        assert set(onsets[i]) == set(record["failure_modes"])
        for mode, onset in onsets[i].items():
            first = next(b for b in batches if b.failures[mode][i])
            assert onset == first.event_time_ms


@pytest.mark.parametrize("profile", ["seed", "fleet"])
def test_long_runs_stay_inside_the_physical_ranges(profile: str) -> None:
    options = {"failure_rate": 2.0} if profile == "seed" else {"failing_share": 0.3}
    for batch in run(500, cars=200, profile=profile, **options):
        for name, (low, high) in PHYSICAL_RANGES.items():
            values = batch.sensors[name]
            assert np.all((values >= low) & (values <= high)), (name, values.min(), values.max())


@pytest.mark.parametrize(
    "bad",
    [
        {"cars": 0},
        {"interval_ms": 0},
        {"profile": "seed", "failure_rate": -1.0},
        {"profile": "mine"},
        {"failing_share": 1.0},
        {"failing_share": -0.1},
        {"repair_hours": 0.0},
        # an option of the other profile would be silently ignored: refused instead
        {"failure_rate": 2.0},
        {"throttle_change_chance": 0.1},
        {"profile": "seed", "failing_share": 0.1},
    ],
)
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        SimulationConfig(**bad)
