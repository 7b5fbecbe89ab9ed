"""Avro object container files built straight from the Kafka messages' Avro bodies.

A Kafka message is Avro single-object encoded (10-byte header + the record's binary body). The
binary encoding of a record is the concatenation of its fields, so the lake record "the event
plus ``kafka_partition`` and ``kafka_offset``" is the message body followed by two zig-zag
varints: no decode and re-encode on the hot path. Files are snappy-compressed, carry the lake
schema in their header, and are deterministic: the sync marker is derived from the object name,
and the header holds nothing that depends on time.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from cramjam import snappy

from fleet.avro import Schema, zigzag_varint

MAGIC = b"Obj\x01"
#: Columns the lake adds to each event: where it came from in Kafka.
KAFKA_FIELDS: list[dict[str, Any]] = [
    {"name": "kafka_partition", "type": "int", "doc": "Kafka partition of the event"},
    {"name": "kafka_offset", "type": "long", "doc": "Kafka offset of the event"},
]


def lake_schema(event_schema: Schema, dataset: str) -> Schema:
    """The event schema plus the Kafka position columns, in the lake's own namespace."""
    names = [f["name"] for f in event_schema["fields"]]
    if names[:2] != ["car_id", "event_time"]:
        raise ValueError("lake datasets need car_id and event_time as their first two fields")
    return {
        "type": "record",
        "name": event_schema["name"],
        "namespace": f"fleet.lake.{dataset}.v1",
        "doc": f"{event_schema.get('doc', '')} Archived by the lake with its Kafka position.",
        "fields": [*event_schema["fields"], *KAFKA_FIELDS],
    }


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode one zig-zag varint at ``pos``; return (value, next position)."""
    shift = 0
    n = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
    return (n >> 1) ^ -(n & 1), pos


def car_and_time(body: bytes, pos: int) -> tuple[str, int]:
    """``car_id`` (string) and ``event_time`` (long), the first two fields of a body at ``pos``."""
    length, pos = read_varint(body, pos)
    if length < 0 or pos + length > len(body):
        raise ValueError("bad car_id length")
    car_id = body[pos : pos + length].decode()
    event_time, _ = read_varint(body, pos + length)
    return car_id, event_time


def sync_marker(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()[:16]


def _avro_bytes(data: bytes) -> bytes:
    return zigzag_varint(len(data)) + data


def container_file(
    schema: Schema, payloads: Sequence[bytes], name: str, block_records: int = 10_000
) -> bytes:
    """An Avro object container file (snappy) of record bodies, deterministic for ``name``."""
    sync = sync_marker(name)
    meta = {
        "avro.schema": json.dumps(schema, separators=(",", ":"), sort_keys=True).encode(),
        "avro.codec": b"snappy",
    }
    parts = [MAGIC, zigzag_varint(len(meta))]
    for key, value in meta.items():
        parts += [_avro_bytes(key.encode()), _avro_bytes(value)]
    parts += [zigzag_varint(0), sync]
    for start in range(0, len(payloads), block_records):
        chunk = payloads[start : start + block_records]
        raw = b"".join(chunk)
        data = bytes(snappy.compress_raw(raw)) + struct.pack(">I", zlib.crc32(raw) & 0xFFFFFFFF)
        parts += [zigzag_varint(len(chunk)), zigzag_varint(len(data)), data, sync]
    return b"".join(parts)


# --- the hot path, vectorized over a batch of messages of one partition ---

_TEN = np.arange(10)


def varint_suffixes(prefix: bytes, values: np.ndarray) -> list[bytes]:
    """``prefix`` + the zig-zag varint of each non-negative value, as one bytes per value."""
    n = len(values)
    z = values.astype(np.uint64) << np.uint64(1)
    groups = np.stack([(z >> np.uint64(7 * k)) & np.uint64(0x7F) for k in range(10)], axis=1)
    more = np.stack([(z >> np.uint64(7 * (k + 1))) != 0 for k in range(10)], axis=1)
    width = 1 + more.sum(axis=1)
    body = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    p = len(prefix)
    matrix = np.empty((n, p + 10), np.uint8)
    matrix[:, :p] = np.frombuffer(prefix, np.uint8)
    matrix[:, p:] = body
    blob = matrix.tobytes()
    row = p + 10
    return [blob[i * row : i * row + p + w] for i, w in enumerate(width.tolist())]


def parse_batch(values: list[bytes], header: bytes) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """For single-object messages: which carry ``header`` and parse (mask), their event times,
    and their car ids (bytes). Rows not in the mask need the slow path."""
    n = len(values)
    skip = len(header)
    lengths = np.fromiter(map(len, values), np.int64, n)
    starts = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    buf = np.frombuffer(b"".join(values) + bytes(skip + 24), np.uint8)
    heads = buf[starts[:, None] + np.arange(skip)]
    ok = (heads == np.frombuffer(header, np.uint8)).all(axis=1) & (lengths > skip + 1)
    first = buf[starts + skip].astype(np.int64)
    ok &= first < 0x80  # a car id shorter than 64 bytes: its length is one varint byte
    car_len = first >> 1
    at = starts + skip + 1 + car_len
    window = buf[at[:, None] + _TEN].astype(np.uint64)
    last = np.argmax(window < 0x80, axis=1)  # index of the varint's last byte
    ok &= window[np.arange(n), last] < 0x80
    ok &= at + last + 1 <= starts + lengths
    used = _TEN[None, :] <= last[:, None]
    shifted = (window & np.uint64(0x7F)) << (np.uint64(7) * _TEN.astype(np.uint64))
    z = np.bitwise_or.reduce(np.where(used, shifted, np.uint64(0)), axis=1)
    times = (z >> np.uint64(1)).astype(np.int64) ^ -(z & np.uint64(1)).astype(np.int64)
    cars = [v[skip + 1 : skip + 1 + c] for v, c in zip(values, car_len.tolist(), strict=True)]
    return ok, times, cars
