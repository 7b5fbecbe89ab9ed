"""Synthetic telemetry for the lake's tests (the simulator is another component)."""

from __future__ import annotations

from typing import Any

from fleet.contract import SENSOR_TYPES

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def reading(i: int, car: str | None = None, event_time: int | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "car_id": car or f"car-{i % 7}",
        "event_time": T0 + i * 1000 if event_time is None else event_time,
        "seq": i,
    }
    for j, (name, kind) in enumerate(SENSOR_TYPES.items()):
        record[name] = kind((i * 7 + j) % 50) + (0.5 if kind is float else 0)
    record["failure_occurred"] = [None, True, False][i % 3]
    record["failure_modes"] = ["coolant", "tire_pressure_1_2"] if i % 5 == 0 else None
    return record
