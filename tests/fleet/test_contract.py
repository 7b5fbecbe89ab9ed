"""The telemetry contract matches the seed's CarData record (pure)."""

from __future__ import annotations

import csv
from pathlib import Path

from fleet.contract import FAILURE_MODES, PHYSICAL_RANGES, SENSOR_TYPES, SENSORS, UNITS

SEED = Path(__file__).parents[1] / "data" / "car-sensor-sample.csv"


def test_eighteen_sensors_with_the_seed_types() -> None:
    assert len(SENSORS) == 18
    ints = {name for name, kind in SENSOR_TYPES.items() if kind is int}
    assert ints == {
        "tire_pressure_1_1",
        "tire_pressure_1_2",
        "tire_pressure_2_1",
        "tire_pressure_2_2",
        "control_unit_firmware",
    }


def test_every_sensor_has_a_unit_and_a_physical_range() -> None:
    assert set(UNITS) == set(SENSORS) == set(PHYSICAL_RANGES)
    assert all(low < high for low, high in PHYSICAL_RANGES.values())


def test_seed_columns_are_time_car_and_our_sensors_in_order() -> None:
    with SEED.open() as handle:
        header = next(csv.reader(handle))
    assert header == ["time", "car", *SENSORS]


def test_seed_values_lie_inside_the_physical_ranges() -> None:
    with SEED.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1000
    for row in rows:
        for name in SENSORS:
            low, high = PHYSICAL_RANGES[name]
            assert low <= float(row[name]) <= high, (name, row[name])


def test_failure_modes_are_per_wheel_where_the_seed_says_so() -> None:
    assert len(FAILURE_MODES) == 11
    assert {"drive_shaft", "coolant", "firmware"} <= set(FAILURE_MODES)
