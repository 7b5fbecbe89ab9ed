"""The platform's Kafka topics, with explicit partitions and configs, created idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from fleet.settings import Settings

THIRTY_DAYS_MS = str(30 * 24 * 3600 * 1000)
DEAD_LETTER_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    topics = settings.topics
    rf = topics.replication_factor
    return [
        TopicSpec(
            topics.telemetry,
            topics.telemetry_partitions,
            rf,
            # The system of record: kept forever so twins, lake and models can be rebuilt.
            {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"},
            "sensor readings (Avro, key = car id)",
        ),
        TopicSpec(
            topics.anomalies,
            topics.anomalies_partitions,
            rf,
            # Scores are events too: a twin rebuild restores them from here.
            {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"},
            "anomaly scores (Avro, key = car id)",
        ),
        TopicSpec(
            topics.dead_letters,
            topics.dead_letters_partitions,
            rf,
            # Set, not inherited: the bridge bounds every dead letter to fit it.
            {"retention.ms": THIRTY_DAYS_MS, "max.message.bytes": str(DEAD_LETTER_MAX_BYTES)},
            "rejected input: original bytes (up to a bound), reason in headers",
        ),
        TopicSpec(
            topics.models,
            1,
            rf,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
            "promoted models (Avro, key = model name, compacted)",
        ),
        TopicSpec(
            topics.commands,
            topics.commands_partitions,
            rf,
            # Commands are part of the twin's truth (its desired state): kept forever for rebuilds.
            {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"},
            "commands to cars: desired-state changes (Avro, key = car id)",
        ),
        TopicSpec(
            topics.twin_changes,
            topics.twin_changes_partitions,
            rf,
            # A notification stream, not a source of truth: the twins can always be re-read.
            {"retention.ms": str(topics.twin_changes_retention_hours * 3600 * 1000)},
            "what each twin write changed (Avro, key = car id)",
        ),
    ]


def create_topics(admin: AdminClient, specs: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Existing ones are kept."""
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=s.replication_factor,
            config=s.config,
        )
        for s in specs
    ]
    created: list[str] = []
    for name, future in admin.create_topics(
        new, operation_timeout=timeout, request_timeout=timeout
    ).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created
