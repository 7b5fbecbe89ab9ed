"""An alarm's reasons in words (ml/reasons.py, pure): the sensor a person knows, its value and
its healthy band, whichever feature named it."""

from __future__ import annotations

from ml import reasons

READING = {
    "tire_pressure_2_1": 21,
    "accelerometer_1_2_value": 3.46,
    "engine_vibration_amplitude": 3000.0,
    "speed": 20.0,
    "coolant_temp": 142.4,
    "control_unit_firmware": 1000,
    "battery_voltage": 231.0,
}


def test_each_feature_reads_as_its_sensor_beside_its_band() -> None:
    said = {f: reasons.describe(f, READING) for f in READING}
    assert said["tire_pressure_2_1"] == "tire 2_1 at 21 psi (normal 30-34)"
    assert said["accelerometer_1_2_value"] == "shock absorber 1_2 at 3.5 m/s² (normal below 3)"
    assert said["engine_vibration_amplitude"] == "engine vibration 150 mV per m/s (normal 92-108)"
    assert said["coolant_temp"] == "coolant 142 °C (normal up to 110)"
    assert said["control_unit_firmware"] == "firmware 1000 (current 2000)"
    assert said["battery_voltage"] == "battery voltage 231 V"


def test_derived_features_name_their_sensor_once() -> None:
    features = ["tire_spread_2_1", "tire_pressure_2_1", "coolant_excess", "vibration_per_speed"]
    assert reasons.describe_all(features, READING) == [
        "tire 2_1 at 21 psi (normal 30-34)",
        "coolant 142 °C (normal up to 110)",
        "engine vibration 150 mV per m/s (normal 92-108)",
    ]


def test_a_missing_value_leaves_the_name_and_a_parked_car_no_ratio() -> None:
    assert reasons.describe("coolant_excess", {}) == "coolant_excess"
    parked = READING | {"speed": 0.0, "engine_vibration_amplitude": 0.0}
    assert reasons.describe("vibration_per_speed", parked) == "engine vibration 0 mV standing still"
