"""The bulk MQTT packet code agrees with paho's own encoders and decoders."""

from __future__ import annotations

import numpy as np
import pytest
from paho.mqtt import _packet
from paho.mqtt.client import MQTTv5, MQTTv311
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet.avro import telemetry_codec
from ingest.fast_avro import BatchEncoder, varints
from ingest.mqtt_fast import (
    BulkReader,
    decode_publish,
    puback_packets,
    publish_packets,
    remaining_length,
)
from tests.ingest.helpers import valid_payload, valid_sensors


def split(packets: bytes) -> list[tuple[int, bytes]]:
    """(command, body) of each packet in a block (a reference parser, byte by byte)."""
    out, pos = [], 0
    while pos < len(packets):
        command, length, shift, pos = packets[pos], 0, 0, pos + 1
        while True:
            byte = packets[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append((command, packets[pos : pos + length]))
        pos += length
    return out


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455])
def test_remaining_length_is_mqtts_variable_integer(length: int) -> None:
    encoded = remaining_length(length)
    assert split(b"\x30" + encoded + b"x" * min(length, 3))[0][0] == 0x30
    value, shift = 0, 0
    for byte in encoded:
        value |= (byte & 0x7F) << shift
        shift += 7
    assert value == length
    assert len(encoded) == 1 + (length > 127) + (length > 16_383) + (length > 2_097_151)


@pytest.mark.parametrize("v5", [True, False])
def test_publish_packets_decode_with_paho_and_back(v5: bool) -> None:
    topics = [b"vehicles/sensor/data/car1", b"vehicles/sensor/data/" + b"c" * 64, b"t"]
    payloads = [valid_payload(1), b"", b"x" * 300]
    mids = [1, 65535, 300]
    block = publish_packets(topics, payloads, mids, v5=v5)
    packets = split(block)
    assert len(packets) == 3
    protocol = MQTTv5 if v5 else MQTTv311
    for (command, body), topic, payload, mid in zip(packets, topics, payloads, mids, strict=True):
        theirs = _packet.decode_publish(command, bytes(body), protocol)
        assert (theirs.topic, theirs.payload, theirs.mid, theirs.qos) == (topic, payload, mid, 1)
        ours = decode_publish(command, body, v5)
        assert (ours.topic, ours.payload, ours.mid, ours.qos) == (topic, payload, mid, 1)


def test_publish_with_properties_and_qos_0_decodes_like_paho() -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("origin", "test")
    props.MessageExpiryInterval = 30
    packed = props.pack()
    topic, payload = b"vehicles/sensor/data/car2", valid_payload(2)
    body = len(topic).to_bytes(2, "big") + topic + packed + payload  # QoS 0: no message id
    theirs = _packet.decode_publish(0x30, body, MQTTv5)
    ours = decode_publish(0x30, body, v5=True)
    assert (ours.topic, ours.payload, ours.mid, ours.qos) == (theirs.topic, payload, 0, 0)
    assert theirs.payload == payload


def test_pubacks_are_mqtt_pubacks() -> None:
    block = puback_packets([1, 2, 65535])
    assert block == b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\xff\xff"
    assert [(c, b) for c, b in split(block)] == [
        (0x40, b"\x00\x01"),
        (0x40, b"\x00\x02"),
        (0x40, b"\xff\xff"),
    ]


class FakeClient:
    """Only what BulkReader touches, to feed it bytes cut at awkward places."""

    _protocol = MQTTv5

    def __init__(self) -> None:
        self.handled: list[tuple[int, bytes]] = []
        self._in_packet: dict[str, object] = {}

    def _packet_handle(self) -> int:
        packet = self._in_packet
        self.handled.append((int(packet["command"]), bytes(packet["packet"])))  # type: ignore[call-overload,arg-type]
        return 0


def test_the_bulk_reader_reassembles_packets_split_across_reads() -> None:
    topics = [f"vehicles/sensor/data/car{i}".encode() for i in range(50)]
    payloads = [valid_payload(i) for i in range(50)]
    publishes = publish_packets(topics, payloads, list(range(1, 51)), v5=True)
    # A SUBACK between two PUBLISHes (paho's business), then PUBACKs (one refused).
    packets = split(publishes)
    stream = (
        b"".join(bytes([c]) + remaining_length(len(b)) + b for c, b in packets[:20])
        + b"\x90\x04\x00\x07\x00\x01"
    )
    stream += b"".join(bytes([c]) + remaining_length(len(b)) + b for c, b in packets[20:])
    stream += b"\x40\x03\x00\x09\x87" + puback_packets([10, 11])
    got: list = []
    acks: list = []
    client = FakeClient()
    reader = BulkReader(client, got.extend, acks.extend)  # type: ignore[arg-type]
    # Feed it in pieces of every size from 1 to 97 bytes.
    rng = np.random.default_rng(3)
    pos = 0
    while pos < len(stream):
        step = int(rng.integers(1, 98))
        reader._handle(reader._buffer + stream[pos : pos + step])
        pos += step
    assert reader._buffer == b""
    assert [p.topic for p in got] == topics
    assert [p.payload for p in got] == payloads
    assert [p.mid for p in got] == list(range(1, 51))
    assert acks == [(9, 0x87), (10, 0), (11, 0)]
    assert client.handled == [(0x90, b"\x00\x07\x00\x01")]


def test_bulk_avro_rows_equal_the_codec() -> None:
    codec = telemetry_codec()
    encoder = BatchEncoder(codec)
    labels = [(None, None), (True, ["coolant", "drive_shaft"]), (False, []), (None, ["firmware"])]
    readings = [valid_sensors(i) for i in range(8)]
    car_ids = [f"car-{i}" for i in range(8)]
    times = [1_700_000_000_000 + i for i in range(8)]
    seqs = [0, 1, 2**40, 5, 2**62, 7, 8, 9]
    rows = np.array([list(r.values()) for r in readings], dtype=np.float64)
    got = encoder.encode_rows(car_ids, times, seqs, rows, [labels[i % 4] for i in range(8)])
    for i, value in enumerate(got):
        occurred, modes = labels[i % 4]
        record = {
            "car_id": car_ids[i],
            "event_time": times[i],
            "seq": seqs[i],
            **readings[i],
            "failure_occurred": occurred,
            "failure_modes": modes,
        }
        assert value == codec.encode(record)
        assert codec.decode(value)["seq"] == seqs[i]


def test_vectorized_varints_equal_avros() -> None:
    from fleet.avro import zigzag_varint

    values = [0, 1, -1, 63, 64, -65, 2**31, -(2**31), 2**62, -(2**63), 2**63 - 1]
    values += np.random.default_rng(1).integers(-(2**63), 2**63 - 1, 500).tolist()
    assert varints(np.array(values, dtype=np.int64)) == [zigzag_varint(v) for v in values]
