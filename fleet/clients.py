"""Client factories: the one place that turns settings into Kafka, MongoDB, GCS and MQTT clients.

Everything else talks to the servers through the standard clients these return, so the same
code runs against the local stack, a Kafka cluster, MongoDB 7 and real GCS.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from google.cloud import storage
from paho.mqtt.client import CallbackAPIVersion, MQTTv5
from paho.mqtt.client import Client as MqttClient
from pymongo import MongoClient
from pymongo.database import Database

from fleet.settings import Settings


def kafka_config(settings: Settings) -> dict[str, Any]:
    """Connection settings shared by every Kafka client (librdkafka names)."""
    kafka = settings.kafka
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": kafka.security_protocol,
        # librdkafka's own log lines become ordinary Python log records.
        "logger": logging.getLogger("librdkafka"),
    }
    if kafka.sasl_mechanism:
        config["sasl.mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        config["sasl.username"] = kafka.sasl_username
    if kafka.sasl_password:
        config["sasl.password"] = kafka.sasl_password.get_secret_value()
    config.update(kafka.extra)
    return config


def kafka_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer (acks=all, no duplicates from its own retries)."""
    config = kafka_config(settings) | {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    return Producer(config | overrides)


def kafka_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer that never commits on its own: services commit after their output is durable."""
    config = kafka_config(settings) | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
    }
    return Consumer(config | overrides)


def kafka_admin(settings: Settings) -> AdminClient:
    return AdminClient(kafka_config(settings))


def mongo_client(settings: Settings, **overrides: Any) -> MongoClient[dict[str, Any]]:
    """A MongoDB client whose writes are journaled unless the URI says otherwise.

    Journaled writes are what make "acknowledged" mean "survives a kill -9 of the server".
    """
    options: dict[str, Any] = {"serverSelectionTimeoutMS": 10_000, "appname": "fleet"}
    if "journal=" not in settings.mongodb_uri:
        options["journal"] = True
    return MongoClient(settings.mongodb_uri, **(options | overrides))


def mongo_database(settings: Settings) -> Database[dict[str, Any]]:
    return mongo_client(settings)[settings.mongodb.database]


def gcs_client(settings: Settings) -> storage.Client:
    """Real GCS with application-default credentials, or the emulator anonymously."""
    if settings.uses_real_gcs:
        return storage.Client(project=settings.gcs.project)
    from google.auth.credentials import AnonymousCredentials

    return storage.Client(
        project=settings.gcs.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": settings.gcs_endpoint},
    )


def gcs_bucket(settings: Settings) -> storage.Bucket:
    return gcs_client(settings).bucket(settings.gcs.bucket)


def mqtt_client(
    settings: Settings,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    **kwargs: Any,
) -> MqttClient:
    """A paho-mqtt 2 client with credentials set; the caller connects (sync or async)."""
    client = MqttClient(CallbackAPIVersion.VERSION2, client_id=client_id, **kwargs)
    if username is None:
        username, password = settings.mqtt.username, settings.mqtt.password.get_secret_value()
    client.username_pw_set(username, password)
    if settings.mqtt.tls:
        client.tls_set()
    return client


def gateway_mqtt_client(settings: Settings, client_id: str) -> MqttClient:
    """An MQTT 5 client on the gateway account (the simulator's: may act for any car)."""
    return mqtt_client(
        settings,
        client_id=client_id,
        username=settings.mqtt.gateway_username,
        password=settings.mqtt.gateway_password.get_secret_value(),
        protocol=MQTTv5,
    )
