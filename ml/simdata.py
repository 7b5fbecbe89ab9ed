"""Labelled data from the fleet simulator: held-out evaluation sets, and test/bench input."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy.typing as npt

from fleet import clients
from fleet.avro import telemetry_codec
from fleet.settings import Settings
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
