"""The lake's datasets: which topic, which event codec, which object prefix and lake schema."""

from __future__ import annotations

from dataclasses import dataclass

from fleet.avro import Codec, Schema, anomaly_codec, telemetry_codec
from fleet.settings import Settings
from lake.avrofile import lake_schema
from lake.naming import DATASET_PREFIXES


@dataclass(frozen=True)
class Dataset:
    name: str
    topic: str
    codec: Codec
    prefix: str
    schema: Schema  # the lake schema: the event's fields + kafka_partition, kafka_offset


CODECS = {"telemetry": telemetry_codec, "anomalies": anomaly_codec}


def event_codec(name: str) -> Codec:
    if name not in CODECS:
        raise ValueError(f"unknown lake dataset {name!r}; known: {', '.join(CODECS)}")
    return CODECS[name]()


def lake_schema_of(name: str) -> Schema:
    return lake_schema(event_codec(name).schema, name)


def dataset(settings: Settings, name: str) -> Dataset:
    codec = event_codec(name)
    topic = getattr(settings.topics, name)
    return Dataset(name, topic, codec, DATASET_PREFIXES[name], lake_schema(codec.schema, name))


def datasets(settings: Settings) -> list[Dataset]:
    return [dataset(settings, name) for name in settings.lake.datasets]
