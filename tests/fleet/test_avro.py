"""The single-object encoding and schema evolution (pure; no servers)."""

from __future__ import annotations

import copy
import struct

import pytest

from fleet.avro import (
    MAGIC,
    AvroDecodeError,
    Codec,
    NotSingleObjectError,
    UnknownSchemaError,
    load_schema,
    schema_fingerprint,
    telemetry_codec,
    zigzag_varint,
)
from fleet.contract import SENSOR_TYPES


def reference_crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint exactly as the Avro specification writes it, as an oracle."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def reading(car: str = "car7", seq: int = 3) -> dict:
    record = {"car_id": car, "event_time": 1_567_606_196_000, "seq": seq}
    for i, (name, kind) in enumerate(SENSOR_TYPES.items()):
        record[name] = kind(i + 0.5) if kind is float else kind(30 + i)
    return record


def test_fingerprint_matches_the_spec_algorithm_on_a_primitive_schema() -> None:
    expected = reference_crc64_avro(b'"int"')
    assert schema_fingerprint("int") == struct.pack("<Q", expected)


def test_message_starts_with_marker_and_little_endian_fingerprint() -> None:
    codec = telemetry_codec()
    message = codec.encode(reading())
    assert message[:2] == MAGIC == b"\xc3\x01"
    assert message[2:10] == codec.fingerprint
    assert len(codec.fingerprint) == 8


def test_round_trip_keeps_every_field() -> None:
    codec = telemetry_codec()
    original = reading() | {"failure_occurred": True, "failure_modes": ["coolant", "drive_shaft"]}
    decoded = codec.decode(codec.encode(original))
    for name, value in original.items():
        if isinstance(value, float):
            assert decoded[name] == pytest.approx(value, rel=1e-6)  # Avro float is 32-bit
        else:
            assert decoded[name] == value


def test_encode_many_equals_encode_one_by_one() -> None:
    codec = telemetry_codec()
    records = [reading(f"car{i}", i) for i in range(50)]
    assert codec.encode_many(records) == [codec.encode(r) for r in records]


def test_labels_are_optional_and_default_to_null() -> None:
    codec = telemetry_codec()
    decoded = codec.decode(codec.encode(reading()))
    assert decoded["failure_occurred"] is None
    assert decoded["failure_modes"] is None


def test_unknown_fingerprint_is_rejected_with_a_clear_error() -> None:
    message = bytearray(telemetry_codec().encode(reading()))
    message[2:10] = b"\x00" * 8
    with pytest.raises(UnknownSchemaError, match="unknown schema fingerprint 0000000000000000"):
        telemetry_codec().decode(bytes(message))


@pytest.mark.parametrize("garbage", [b"", b"{}", b'{"speed": 1}', b"\xc3", b"\xc3\x02" + b"x" * 20])
def test_not_single_object_encoded_is_rejected(garbage: bytes) -> None:
    with pytest.raises(NotSingleObjectError):
        telemetry_codec().decode(garbage)


def test_truncated_body_is_an_avro_decode_error() -> None:
    message = telemetry_codec().encode(reading())
    with pytest.raises(AvroDecodeError, match="corrupt"):
        telemetry_codec().decode(message[:20])


def telemetry_v2() -> dict:
    """A future writer: v1 plus an optional field, as schema evolution allows."""
    schema = copy.deepcopy(load_schema("telemetry-v1"))
    schema["fields"].append({"name": "odometer_km", "type": ["null", "double"], "default": None})
    return schema


def test_v1_reader_reads_a_v2_writer_and_ignores_the_new_field() -> None:
    v2_writer = Codec(telemetry_v2())
    v1_reader = Codec(load_schema("telemetry-v1"), also_reads=[telemetry_v2()])
    assert v2_writer.fingerprint != v1_reader.fingerprint
    decoded = v1_reader.decode(v2_writer.encode(reading() | {"odometer_km": 12345.5}))
    assert "odometer_km" not in decoded
    assert decoded["car_id"] == "car7"
    assert decoded["tire_pressure_1_1"] == reading()["tire_pressure_1_1"]


def test_v2_reader_reads_a_v1_writer_with_the_default() -> None:
    v1_writer = telemetry_codec()
    v2_reader = Codec(telemetry_v2(), also_reads=[load_schema("telemetry-v1")])
    decoded = v2_reader.decode(v1_writer.encode(reading()))
    assert decoded["odometer_km"] is None
    assert decoded["seq"] == 3


def test_a_reader_without_the_v2_schema_refuses_v2_messages() -> None:
    with pytest.raises(UnknownSchemaError):
        telemetry_codec().decode(Codec(telemetry_v2()).encode(reading()))


def test_zigzag_varint_matches_the_spec_examples() -> None:
    assert [zigzag_varint(v) for v in (0, -1, 1, -2, 2, 63, -64, 64)] == [
        b"\x00",
        b"\x01",
        b"\x02",
        b"\x03",
        b"\x04",
        b"\x7e",
        b"\x7f",
        b"\x80\x01",
    ]
