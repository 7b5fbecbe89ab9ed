"""Labelled data from the fleet simulator: held-out evaluation sets, and test/bench input."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet import clients
from fleet.avro import telemetry_codec
from fleet.contract import FAILURE_MODES, SENSORS
from fleet.settings import Settings
from ingest.cars.common import NO_ONSET
from ingest.simulator import FleetSimulator, SimulationConfig
from ml.features import columns_from_records


def simulated_records(
    cars: int, steps: int, seed: int, first_car: int = 1, **options: Any
) -> list[dict[str, Any]]:
    """Records of a simulated fleet; ``options`` are SimulationConfig's (profile, failing_share,
    failure_rate for the seed profile, ...)."""
    config = SimulationConfig(cars=cars, seed=seed, first_car=first_car, **options)
    return [r for batch in FleetSimulator(config).run(steps) for r in batch.records()]


def simulated_columns(
    cars: int, steps: int, seed: int, first_car: int = 1, **options: Any
) -> dict[str, npt.NDArray[Any]]:
    return columns_from_records(simulated_records(cars, steps, seed, first_car, **options))


def publish(
    settings: Settings, records: Iterable[Mapping[str, Any]], topic: str | None = None
) -> int:
    """Produce telemetry records keyed by car id; returns how many were delivered."""
    topic = topic or settings.topics.telemetry
    producer = clients.kafka_producer(settings, **{"linger.ms": 20, "batch.num.messages": 10000})
    codec = telemetry_codec()
    rows = list(records)
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for start in range(0, len(rows), 10_000):
        chunk = rows[start : start + 10_000]
        for record, value in zip(chunk, codec.encode_many(chunk), strict=True):
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=record["car_id"].encode(), on_delivery=delivered
                    )
                    break
                except BufferError:
                    producer.poll(0.5)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"{remaining} undelivered, errors: {failures[:3]}")
    return len(rows)


def fleet_columns(steps: int, **options: Any) -> dict[str, npt.NDArray[Any]]:
    """A simulated fleet as columns, car by car (each car's readings in order), straight from
    the simulator's arrays (no per-reading dicts: millions of readings fit). Besides the
    sensors and ``failure_occurred``: ``modes`` (readings x FAILURE_MODES, active modes) and
    ``onsets`` (the same shape: each active mode's onset time in ms, -1 where inactive)."""
    simulator = FleetSimulator(SimulationConfig(**options))
    cars = len(simulator.car_ids)
    sensors: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in SENSORS}
    modes, onsets, times = [], [], []
    for batch in simulator.run(steps):
        for name in SENSORS:
            sensors[name].append(batch.sensors[name])
        modes.append(np.column_stack([batch.failures[m] for m in FAILURE_MODES]))
        onsets.append(
            np.column_stack(
                [
                    np.where(batch.failures[m], batch.onsets[m], NO_ONSET)
                    if m in batch.onsets
                    else np.full(cars, NO_ONSET)
                    for m in FAILURE_MODES
                ]
            )
        )
        times.append(batch.event_time_ms)

    def car_major(parts: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
        stacked = np.stack(parts)  # steps x cars (x modes)
        return np.swapaxes(stacked, 0, 1).reshape(cars * len(parts), *stacked.shape[2:])

    columns: dict[str, npt.NDArray[Any]] = {
        "car_id": np.repeat(np.asarray(simulator.car_ids, dtype=object), steps),
        "seq": np.tile(np.arange(steps, dtype=np.int64), cars),
        "event_time": np.tile(np.asarray(times, np.int64), cars),
    }
    for name in SENSORS:
        columns[name] = car_major(sensors[name]).astype(np.float64)
    columns["modes"] = car_major(modes)
    columns["onsets"] = car_major(onsets).astype(np.int64)
    columns["failure_occurred"] = columns["modes"].any(axis=1)
    return columns
