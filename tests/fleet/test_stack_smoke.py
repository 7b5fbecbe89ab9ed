"""Smoke tests of the four real servers of the local stack, through the platform's clients."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic

from fleet import clients
from fleet.avro import telemetry_codec
from fleet.contract import SENSOR_TYPES
from fleet.settings import Settings
from fleet.stack.services import Mosquitto
from fleet.topics import topic_specs
from fleet.waiting import wait_for
from tests.kafka import produce

pytestmark = pytest.mark.integration


def synthetic_reading(i: int) -> dict:
    record = {"car_id": f"car{i % 100}", "event_time": 1_700_000_000_000 + i * 10, "seq": i // 100}
    for j, (name, kind) in enumerate(SENSOR_TYPES.items()):
        record[name] = kind(i % 50 + j)
    return record


def test_ten_thousand_avro_events_round_trip_through_kafka_with_a_consumer_group(
    settings: Settings,
) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    admin = clients.kafka_admin(settings)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result()
    codec = telemetry_codec()
    sent = [synthetic_reading(i) for i in range(10_000)]

    produce(settings, sent, topic=topic)

    consumer = clients.kafka_consumer(
        settings, group_id=f"smoke-{uuid.uuid4().hex[:8]}", **{"session.timeout.ms": 6000}
    )
    consumer.subscribe([topic])
    received: list[dict] = []
    partitions: set[int] = set()

    def drain() -> bool:
        for message in consumer.consume(num_messages=1000, timeout=0.5):
            assert message.error() is None, message.error()
            decoded = codec.decode(message.value())
            assert message.key().decode() == decoded["car_id"]
            received.append(decoded)
            partitions.add(message.partition())
        return len(received) >= len(sent)

    wait_for(drain, timeout=60, what="10,000 events back from Kafka", interval=0)
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    consumer.close()

    assert len(received) == len(sent)
    assert partitions == {0, 1, 2}  # keys spread over every partition
    assert sorted(received, key=lambda r: r["event_time"]) == [
        r | {"failure_occurred": None, "failure_modes": None} for r in sent
    ]
    assert sum(tp.offset for tp in committed) == len(sent)


def test_platform_topics_exist_with_their_configs(settings: Settings) -> None:
    admin = clients.kafka_admin(settings)
    existing = admin.list_topics(timeout=10).topics
    for spec in topic_specs(settings):
        assert len(existing[spec.name].partitions) == spec.partitions
        resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
        actual = admin.describe_configs([resource])[resource].result()
        for key, value in spec.config.items():
            assert actual[key].value == value, (spec.name, key)


def test_mongodb_wire_server_upserts_and_queries(settings: Settings) -> None:
    with clients.mongo_client(settings) as client:
        twins = client[settings.mongodb.database][f"smoke_{uuid.uuid4().hex[:8]}"]
        twins.update_one(
            {"_id": "car1"}, {"$set": {"speed": 10.0}, "$inc": {"events": 1}}, upsert=True
        )
        twins.update_one(
            {"_id": "car1"}, {"$max": {"speed": 25.0}, "$inc": {"events": 1}}, upsert=True
        )
        twins.update_one(
            {"_id": "car2"}, {"$set": {"speed": 5.0}, "$inc": {"events": 1}}, upsert=True
        )
        fast = list(twins.find({"speed": {"$gt": 20}}))
        assert fast == [{"_id": "car1", "speed": 25.0, "events": 2}]
        assert twins.count_documents({}) == 2


def test_gcs_emulator_uploads_lists_and_downloads(settings: Settings) -> None:
    bucket = clients.gcs_bucket(settings)
    prefix = f"smoke/{uuid.uuid4().hex[:8]}/"
    payload = bytes(range(256)) * 1000
    bucket.blob(prefix + "a.bin").upload_from_string(payload)
    bucket.blob(prefix + "b.txt").upload_from_string("hello")
    names = [blob.name for blob in clients.gcs_client(settings).list_blobs(bucket, prefix=prefix)]
    assert names == [prefix + "a.bin", prefix + "b.txt"]
    assert bucket.blob(prefix + "a.bin").download_as_bytes() == payload


class Subscriber:
    """An MQTT client as the bridge: collects what arrives on a topic filter."""

    def __init__(self, settings: Settings, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.client = clients.mqtt_client(settings, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _c, _u, msg: self.messages.append((msg.topic, msg.payload))
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_connect = lambda c, *args: c.subscribe(topic_filter, qos=1)
        self.client.connect(settings.mqtt_host, settings.mqtt.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def connect_result(settings: Settings, username: str | None, password: str | None) -> str:
    """The broker's CONNACK reason for these credentials (no credentials = anonymous)."""
    outcome: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(str(reason))
    client.connect(settings.mqtt_host, settings.mqtt.port)
    client.loop_start()
    try:
        wait_for(lambda: outcome, timeout=10, what="CONNACK")
    finally:
        client.loop_stop()
        client.disconnect()
    return outcome[0]


def test_mqtt_authenticated_publish_is_received(settings: Settings) -> None:
    subscriber = Subscriber(settings, "vehicles/sensor/data/+")
    try:
        publisher = clients.mqtt_client(
            settings,
            client_id="gw-smoke",
            username=settings.mqtt.gateway_username,
            password=settings.mqtt.gateway_password.get_secret_value(),
        )
        publisher.connect(settings.mqtt_host, settings.mqtt.port)
        publisher.loop_start()
        publisher.publish("vehicles/sensor/data/car42", b'{"speed": 1.5}', qos=1).wait_for_publish(
            10
        )
        publisher.loop_stop()
        publisher.disconnect()
        wait_for(lambda: subscriber.messages, timeout=10, what="the MQTT message")
        assert subscriber.messages == [("vehicles/sensor/data/car42", b'{"speed": 1.5}')]
    finally:
        subscriber.close()


def test_mqtt_refuses_anonymous_and_wrong_password(settings: Settings) -> None:
    assert connect_result(settings, None, None) == "Not authorized"
    assert connect_result(settings, settings.mqtt.username, "wrong") == "Not authorized"
    assert (
        connect_result(settings, settings.mqtt.username, settings.mqtt.password.get_secret_value())
        == "Success"
    )


def test_mqtt_acl_lets_a_car_publish_only_as_itself(settings: Settings) -> None:
    mosquitto = Mosquitto(settings)
    mosquitto.add_user("carA", "carA-secret")
    mosquitto.reload()
    wait_for(
        lambda: connect_result(settings, "carA", "carA-secret") == "Success",
        timeout=10,
        what="the new account to be loaded",
    )
    subscriber = Subscriber(settings, "vehicles/sensor/data/+")
    try:
        car = clients.mqtt_client(
            settings, client_id="carA", username="carA", password="carA-secret"
        )
        car.connect(settings.mqtt_host, settings.mqtt.port)
        car.loop_start()
        # Same connection, in order: if the forbidden message were delivered, it would arrive
        # before the allowed one.
        car.publish("vehicles/sensor/data/carB", b"spoofed", qos=1).wait_for_publish(10)
        car.publish("vehicles/sensor/data/carA", b"genuine", qos=1).wait_for_publish(10)
        car.loop_stop()
        car.disconnect()
        wait_for(lambda: subscriber.messages, timeout=10, what="carA's own message")
        assert subscriber.messages == [("vehicles/sensor/data/carA", b"genuine")]
    finally:
        subscriber.close()
