"""The telemetry contract as plain data: sensor names, types, units and physical ranges.

Names and types come from the Avro schema (one source of truth); units and ranges are the
facts of the seed's car model (see the README's event contract).
"""

from __future__ import annotations

from typing import Final

from fleet.avro import load_schema

#: Fields every telemetry event carries besides the sensors.
META_FIELDS: Final = ("car_id", "event_time", "seq")
#: Ground-truth fields only the simulator fills.
LABEL_FIELDS: Final = ("failure_occurred", "failure_modes")


def _sensor_types() -> dict[str, type]:
    avro_to_python = {"float": float, "int": int}
    return {
        field["name"]: avro_to_python[field["type"]]
        for field in load_schema("telemetry-v1")["fields"]
        if field["name"] not in META_FIELDS + LABEL_FIELDS
    }


#: The seed's 18 sensors in schema order, with their Python type.
SENSOR_TYPES: Final[dict[str, type]] = _sensor_types()
SENSORS: Final = tuple(SENSOR_TYPES)
WHEELS: Final = ("1_1", "1_2", "2_1", "2_2")

UNITS: Final[dict[str, str]] = {
    "coolant_temp": "°C",
    "intake_air_temp": "°C",
    "intake_air_flow_speed": "g/s",
    "battery_percentage": "fraction",
    "battery_voltage": "V",
    "current_draw": "A",
    "speed": "m/s",
    "engine_vibration_amplitude": "mV",
    "throttle_pos": "fraction",
    **{f"tire_pressure_{w}": "psi" for w in WHEELS},
    **{f"accelerometer_{w}_value": "m/s²" for w in WHEELS},
    "control_unit_firmware": "version",
}

#: Values outside these closed ranges are impossible sensor output: the bridge dead-letters them.
#: They are wide enough for everything the seed's car model produces: its coolant runs away past
#: 1,900 °C on overheating cars and its battery charge keeps draining below zero (94% of the
#: seed's rows), so those bounds are the model's, not a real car's.
PHYSICAL_RANGES: Final[dict[str, tuple[float, float]]] = {
    "coolant_temp": (-60.0, 5000.0),
    "intake_air_temp": (-60.0, 150.0),
    "intake_air_flow_speed": (0.0, 2000.0),
    "battery_percentage": (-100.0, 1.0),
    "battery_voltage": (0.0, 1000.0),
    "current_draw": (-1000.0, 1000.0),
    "speed": (0.0, 120.0),
    "engine_vibration_amplitude": (0.0, 100_000.0),
    "throttle_pos": (0.0, 1.0),
    **{f"tire_pressure_{w}": (0.0, 100.0) for w in WHEELS},
    **{f"accelerometer_{w}_value": (-100.0, 100.0) for w in WHEELS},
    "control_unit_firmware": (0.0, 1_000_000.0),
}

#: Failure modes the simulator labels; per-wheel modes carry the wheel suffix.
FAILURE_MODES: Final = (
    *(f"shock_absorber_{w}" for w in WHEELS),
    *(f"tire_pressure_{w}" for w in WHEELS),
    "drive_shaft",
    "coolant",
    "firmware",
)

#: Properties a command may set on a car (the twin's `desired` part): name -> the sensor by which
#: the car reports it. The value's type and valid range are that sensor's (SENSOR_TYPES,
#: PHYSICAL_RANGES). Adding a desired property is one entry here.
DESIRED_PROPERTIES: Final[dict[str, str]] = {
    "firmware": "control_unit_firmware",
}

#: MQTT topic prefix of commands to cars: a car reads `vehicles/commands/<its id>` only (ACL).
COMMAND_TOPIC_PREFIX: Final = "vehicles/commands/"


def sensor_runs() -> list[tuple[str, list[str]]]:
    """SENSORS in schema order as runs: consecutive float sensors form one ("f", names) run,
    each int sensor is its own ("i", [name]) run (for bulk Avro codecs: doubles are fixed-width,
    ints are varints)."""
    runs: list[tuple[str, list[str]]] = []
    for name in SENSORS:
        kind = "f" if SENSOR_TYPES[name] is float else "i"
        if kind == "f" and runs and runs[-1][0] == "f":
            runs[-1][1].append(name)
        else:
            runs.append((kind, [name]))
    return runs
