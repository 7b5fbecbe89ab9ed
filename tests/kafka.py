"""Putting test events on Kafka the way the platform does: Avro single-object, keyed by car id."""

from __future__ import annotations

from typing import Any

from fleet import clients
from fleet.avro import anomaly_codec, telemetry_codec
from fleet.settings import Settings


def produce(
    settings: Settings,
    records: list[dict[str, Any]],
    partition: int | None = None,
    topic: str | None = None,
) -> None:
    """Produce readings (or anomaly scores) in order, keyed by car id, waiting for every ack.

    Scores go to the anomaly topic, readings to the telemetry topic, unless ``topic`` is
    given; ``partition`` pins every record to one partition.
    """
    is_score = "score" in records[0]
    codec = anomaly_codec() if is_score else telemetry_codec()
    topic = topic or (settings.topics.anomalies if is_score else settings.topics.telemetry)
    extra = {} if partition is None else {"partition": partition}
    producer = clients.kafka_producer(settings)
    failures: list[str] = []
    for record, value in zip(records, codec.encode_many(records), strict=True):
        producer.produce(
            topic,
            key=record["car_id"],
            value=value,
            on_delivery=lambda err, _msg: err and failures.append(str(err)),
            **extra,
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []
