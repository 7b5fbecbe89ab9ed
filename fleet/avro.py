"""Avro single-object encoding, so every Kafka message names its own schema without a registry.

Wire format (Avro spec, "Single object encoding"): ``C3 01`` + the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form + the Avro binary body.

A :class:`Codec` writes one schema and reads every schema it has been told about, resolving
each to its own reader schema by the Avro resolution rules (added optional fields take their
defaults, removed ones are skipped).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

Schema = dict[str, Any]
Record = dict[str, Any]


class AvroDecodeError(ValueError):
    """A message that cannot be decoded; the reason is the message text."""


class NotSingleObjectError(AvroDecodeError):
    pass


class UnknownSchemaError(AvroDecodeError):
    pass


def zigzag_varint(value: int) -> bytes:
    """Avro's zig-zag variable-length encoding of an int or long (for hand-built bodies)."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def schema_fingerprint(schema: Schema | str) -> bytes:
    """CRC-64-AVRO fingerprint of the schema's canonical form, as the 8 bytes on the wire."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


@cache
def load_schema(name: str) -> Schema:
    """A schema shipped in ``fleet/schemas`` by file stem, e.g. ``telemetry-v1``."""
    text = resources.files("fleet.schemas").joinpath(f"{name}.avsc").read_text()
    schema: Schema = json.loads(text)
    return schema


class Codec:
    """Encodes with ``schema``; decodes any of ``schema`` and ``also_reads`` into ``schema``."""

    def __init__(self, schema: Schema, also_reads: Iterable[Schema] = ()) -> None:
        self.schema = schema
        self._parsed = fastavro.parse_schema(schema)
        self.fingerprint = schema_fingerprint(schema)
        self.header = MAGIC + self.fingerprint
        self.name: str = schema["name"]
        self._writers: dict[bytes, Any] = {self.fingerprint: self._parsed}
        for other in also_reads:
            self._writers[schema_fingerprint(other)] = fastavro.parse_schema(other)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self.header)
        fastavro.schemaless_writer(buf, self._parsed, record)
        return buf.getvalue()

    def encode_many(self, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        """Encode a batch, reusing one buffer (the hot path of producers)."""
        out: list[bytes] = []
        buf = io.BytesIO()
        for record in records:
            buf.seek(0)
            buf.truncate()
            buf.write(self.header)
            fastavro.schemaless_writer(buf, self._parsed, record)
            out.append(buf.getvalue())
        return out

    def decode(self, message: bytes) -> Record:
        if len(message) < HEADER_SIZE or message[:2] != MAGIC:
            raise NotSingleObjectError(
                f"not an Avro single-object message (expected marker C3 01, got {message[:2]!r})"
            )
        key = bytes(message[2:HEADER_SIZE])
        writer = self._writers.get(key)
        if writer is None:
            raise UnknownSchemaError(
                f"unknown schema fingerprint {key.hex()} for {self.name}; "
                f"known: {', '.join(k.hex() for k in self._writers)}"
            )
        body = io.BytesIO(message)
        body.seek(HEADER_SIZE)
        try:
            if writer is self._parsed:
                return fastavro.schemaless_reader(body, writer)  # type: ignore[return-value]
            return fastavro.schemaless_reader(body, writer, self._parsed)  # type: ignore[return-value]
        except Exception as exc:  # fastavro raises EOFError, ValueError, SchemaResolutionError...
            raise AvroDecodeError(f"corrupt {self.name} body: {exc}") from exc


@cache
def telemetry_codec() -> Codec:
    return Codec(load_schema("telemetry-v1"))


@cache
def anomaly_codec() -> Codec:
    return Codec(load_schema("anomaly-v1"))


@cache
def model_announcement_codec() -> Codec:
    return Codec(load_schema("model-announcement-v1"))


@cache
def command_codec() -> Codec:
    return Codec(load_schema("command-v1"))


@cache
def twin_change_codec() -> Codec:
    return Codec(load_schema("twin-change-v1"))
