from __future__ import annotations

import io

import fastavro
import polars as pl
import pytest

from fleet.avro import load_schema, telemetry_codec, zigzag_varint
from lake.avrofile import car_and_time, container_file, lake_schema, read_varint
from tests.lake.helpers import reading


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 64, 2**31 - 1, -(2**31), 2**62, -(2**63)])
def test_zigzag_varints_round_trip_like_avro(value: int) -> None:
    encoded = zigzag_varint(value)
    assert read_varint(encoded, 0) == (value, len(encoded))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, {"type": "long"}, value)
    assert buf.getvalue() == encoded


def test_container_file_of_message_bodies_reads_back_with_fastavro_and_polars() -> None:
    codec = telemetry_codec()
    records = [reading(i) for i in range(25)]
    messages = codec.encode_many(records)
    assert car_and_time(messages[3], 10) == (records[3]["car_id"], records[3]["event_time"])
    schema = lake_schema(load_schema("telemetry-v1"), "telemetry")
    payloads = [m[10:] + zigzag_varint(4) + zigzag_varint(500 + i) for i, m in enumerate(messages)]
    data = container_file(schema, payloads, "a/b.avro", block_records=10)

    reader = fastavro.reader(io.BytesIO(data))
    assert reader.codec == "snappy"
    assert reader.writer_schema is not None
    back = list(reader)
    expected = [
        fastavro.schemaless_reader(io.BytesIO(m[10:]), codec.schema) for m in messages
    ]  # floats as Avro stores them (32-bit)
    assert back == [
        r | {"kafka_partition": 4, "kafka_offset": 500 + i} for i, r in enumerate(expected)
    ]
    assert pl.read_avro(io.BytesIO(data)).height == 25
    # Deterministic: same name and payloads, same bytes; another name, another sync marker.
    assert container_file(schema, payloads, "a/b.avro", block_records=10) == data
    assert container_file(schema, payloads, "a/c.avro", block_records=10) != data
