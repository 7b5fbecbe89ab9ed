"""Twins of a simulated fleet, for the explorer's tests and benchmark.

Readings come from the project's simulator; scores are what a scorer would emit for each car's
newest reading (high when a failure mode is active). Both are folded by the twin package's own
pure fold, so the documents have exactly the projector's shape.
"""

from __future__ import annotations

import zlib
from typing import Any

from ingest.simulator import FleetSimulator, SimulationConfig
from twin.events import Envelope
from twin.fold import fold
from twin.history import to_document
from twin.project import Raw

THRESHOLD = 0.5


def score_for(record: dict[str, Any]) -> dict[str, Any]:
    """A scorer's verdict on one reading: anomalous exactly when a failure mode is active."""
    modes = record["failure_modes"] or []
    # A deterministic spread per reading, as a real model's scores have.
    jitter = zlib.crc32(f"{record['car_id']}:{record['seq']}".encode()) % 10_000 / 100_000
    value = (0.8 + 0.05 * len(modes) if modes else 0.1) + jitter
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


def simulated_events(
    cars: int = 40,
    *,
    steps: int = 8,
    seed: int = 11,
    failure_rate: float = 3.0,
    scored: int = -1,
    silent: tuple[str, ...] = (),
    interval_ms: int = 10_000,
    first_car: int = 1,
    scores_per_car: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(readings, scores): ``steps`` readings per car, except that ``silent`` cars stop after
    two; a score for each of the newest ``scores_per_car`` readings of each of the first
    ``scored`` cars (-1 = all), oldest first."""
    simulator = FleetSimulator(
        SimulationConfig(
            cars=cars,
            seed=seed,
            profile="seed",  # fixtures with many failures at once, as the pages were drawn for
            failure_rate=failure_rate,
            interval_ms=interval_ms,
            first_car=first_car,
        )
    )
    readings: list[dict[str, Any]] = []
    last: dict[str, list[dict[str, Any]]] = {}
    for batch in simulator.run(steps):
        for record in batch.records():
            if record["car_id"] in silent and record["seq"] >= 2:
                continue
            readings.append(record)
            last.setdefault(record["car_id"], []).append(record)
    chosen = simulator.car_ids if scored < 0 else simulator.car_ids[:scored]
    return readings, [score_for(r) for car in chosen for r in last[car][-scores_per_car:]]


def simulated_twins(
    cars: int = 40,
    *,
    steps: int = 8,
    seed: int = 11,
    failure_rate: float = 3.0,
    scored: int = -1,
    first_car: int = 1,
    scores_per_car: int = 1,
) -> list[dict[str, Any]]:
    """The twins the projector would build from ``simulated_events`` (folded in memory)."""
    readings, scores = simulated_events(
        cars,
        scores_per_car=scores_per_car,
        steps=steps,
        seed=seed,
        failure_rate=failure_rate,
        scored=scored,
        first_car=first_car,
    )
    per_car: dict[str, list[Envelope]] = {}
    for offset, record in enumerate(readings):
        per_car.setdefault(record["car_id"], []).append(
            Envelope("telemetry", 0, offset, "telemetry", record)
        )
    for offset, record in enumerate(scores):
        per_car[record["car_id"]].append(Envelope("anomalies", 0, offset, "anomaly", record))
    twins = []
    for car, events in per_car.items():
        result = fold(None, car, events)
        assert result.twin is not None
        twins.append(result.twin)
    return twins


def simulated_history(cars: int = 40, **options: Any) -> dict[str, list[dict[str, Any]]]:
    """Each car's history documents (what `fleet history run` writes) from
    ``simulated_events``, oldest first."""
    readings, scores = simulated_events(cars, **options)
    per_car: dict[str, list[dict[str, Any]]] = {}
    for kind, records in (("reading", readings), ("score", scores)):
        for offset, record in enumerate(records):
            doc = to_document(kind, record, Raw(kind, 0, offset, b"", b""))  # type: ignore[arg-type]
            per_car.setdefault(record["car_id"], []).append(doc)
    return {car: sorted(docs, key=lambda d: (d["t"], d["kind"])) for car, docs in per_car.items()}
