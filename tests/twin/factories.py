"""Readings and scores as plain dicts, as the bridge and the scorer put them on Kafka."""

from __future__ import annotations

from typing import Any

from fleet.contract import WHEELS
from twin.events import Envelope

T0 = 1_700_000_000_000  # ms
STEP = 10_000  # the seed's 10 s step


def reading(car: str = "car1", seq: int = 0, event_time: int | None = None, **sensors: Any) -> dict:
    """A healthy reading of the seed's car model; override sensors by keyword."""
    record: dict[str, Any] = {
        "car_id": car,
        "event_time": T0 + seq * STEP if event_time is None else event_time,
        "seq": seq,
        "coolant_temp": 40.0 + seq * 0.1 * 10.0,  # healthy: +0.1 degC per A per step at 10 A
        "intake_air_temp": 25.0,
        "intake_air_flow_speed": 100.0,
        "battery_percentage": 0.8,
        "battery_voltage": 240.0,
        "current_draw": 10.0,
        "speed": 20.0,
        "engine_vibration_amplitude": 2000.0,
        "throttle_pos": 0.3,
        **{f"tire_pressure_{w}": 32 for w in WHEELS},
        **{f"accelerometer_{w}_value": 0.5 for w in WHEELS},
        "control_unit_firmware": 2000,
        "failure_occurred": None,
        "failure_modes": None,
    }
    record.update(sensors)
    return record


def score(  # noqa: PLR0917
    car: str = "car1",
    seq: int = 0,
    value: float = 0.1,
    threshold: float = 0.5,
    event_time: int | None = None,
    version: str = "1",
) -> dict:
    return {
        "car_id": car,
        "event_time": T0 + seq * STEP if event_time is None else event_time,
        "seq": seq,
        "score": value,
        "threshold": threshold,
        "is_anomaly": value > threshold,
        "model_name": "autoencoder",
        "model_version": version,
        "top_sensors": [{"sensor": "coolant_temp", "contribution": 0.7}],
        "scored_at": T0 + seq * STEP + 500,
    }


def envelopes(
    records: list[dict], topic: str = "telemetry", partition: int = 0, start: int = 0
) -> list[Envelope]:
    kind = "anomaly" if "score" in records[0] else "telemetry"
    return [
        Envelope(topic, partition, start + i, kind, r)  # type: ignore[arg-type]
        for i, r in enumerate(records)
    ]
