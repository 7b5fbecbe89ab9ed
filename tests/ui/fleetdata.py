"""Twins of a simulated fleet, for the explorer's tests and benchmark.

Readings come from the project's simulator; scores are what a scorer would emit for each car's
newest reading (high when a failure mode is active). Both are folded by the twin package's own
pure fold, so the documents have exactly the projector's shape.
"""

from __future__ import annotations

from typing import Any

from ingest.simulator import FleetSimulator, SimulationConfig
from twin.events import Envelope
from twin.fold import fold

THRESHOLD = 0.5


def score_for(record: dict[str, Any]) -> dict[str, Any]:
    """A scorer's verdict on one reading: anomalous exactly when a failure mode is active."""
    modes = record["failure_modes"] or []
    value = 0.8 + 0.05 * len(modes) if modes else 0.1 + (hash(record["car_id"]) % 10) / 100
    return {
        "car_id": record["car_id"],
        "event_time": record["event_time"],
        "seq": record["seq"],
        "score": value,
        "threshold": THRESHOLD,
        "is_anomaly": value > THRESHOLD,
        "model_name": "autoencoder",
        "model_version": "3",
        "top_sensors": [
            {"sensor": "coolant_temp" if "coolant" in modes else "speed", "contribution": 0.6},
            {"sensor": "tire_pressure_1_1", "contribution": 0.3},
        ],
        "scored_at": record["event_time"] + 400,
    }


def simulated_twins(
    cars: int = 40, steps: int = 8, seed: int = 11, failure_rate: float = 3.0, scored: int = -1
) -> list[dict[str, Any]]:
    """Fold ``steps`` readings per car (and a score for the first ``scored`` cars; -1 = all)."""
    simulator = FleetSimulator(
        SimulationConfig(cars=cars, seed=seed, failure_rate=failure_rate, interval_ms=10_000)
    )
    per_car: dict[str, list[Envelope]] = {car: [] for car in simulator.car_ids}
    last: dict[str, dict[str, Any]] = {}
    offset = 0
    for batch in simulator.run(steps):
        for record in batch.records():
            per_car[record["car_id"]].append(Envelope("telemetry", 0, offset, "telemetry", record))
            last[record["car_id"]] = record
            offset += 1
    twins = []
    for i, car in enumerate(simulator.car_ids):
        events = per_car[car]
        if scored < 0 or i < scored:
            events.append(Envelope("anomalies", 0, i, "anomaly", score_for(last[car])))
        result = fold(None, car, events)
        assert result.twin is not None
        twins.append(result.twin)
    return twins
