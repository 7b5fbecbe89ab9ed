"""Dead letters: the original bytes of rejected input (up to a bound), with why and where in
Kafka headers."""

from __future__ import annotations

import hashlib

from ingest.validation import Rejected

Headers = list[tuple[str, bytes]]

#: Header values from the outside (an MQTT topic may be 64 kB) are cut to this many characters.
HEADER_TEXT_MAX = 1024


def _text(value: object) -> bytes:
    text = str(value)
    return (text if len(text) <= HEADER_TEXT_MAX else text[: HEADER_TEXT_MAX - 1] + "…").encode()


def dead_letter_headers(
    rejected: Rejected, source: str, received_at_ms: int, **where: str | int
) -> Headers:
    """Headers of a dead letter: ``reason`` (a code from ``validation.REASONS``), ``detail``,
    ``source`` (``mqtt`` or ``csv``), ``received_at`` (ms) and where it came from (for MQTT
    ``mqtt_topic``; for CSV ``file`` and ``row``; for ``poison`` also ``error``)."""
    headers: Headers = [
        ("reason", rejected.reason.encode()),
        ("detail", _text(rejected.detail)),
        ("source", source.encode()),
        ("received_at", str(received_at_ms).encode()),
    ]
    headers += [(key, _text(value)) for key, value in where.items()]
    return headers


def dead_letter(
    rejected: Rejected,
    payload: bytes,
    payload_limit: int,
    source: str,
    received_at_ms: int,
    **where: str | int,
) -> tuple[bytes, Headers]:
    """A dead letter's value and headers: the first ``payload_limit`` bytes of ``payload``,
    with headers that say what it was besides the reason: its length (``payload_bytes``), its
    SHA-256 (``payload_sha256``) and ``payload_truncated``. So a dead letter always fits the
    topic, and the original can still be recognised."""
    headers = dead_letter_headers(rejected, source, received_at_ms, **where)
    headers += [
        ("payload_bytes", str(len(payload)).encode()),
        ("payload_sha256", hashlib.sha256(payload).hexdigest().encode()),
        ("payload_truncated", b"true" if len(payload) > payload_limit else b"false"),
    ]
    return payload[:payload_limit], headers


def header_dict(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka message headers as a dict of text, for tests and tools."""
    return {key: (value or b"").decode() for key, value in headers or []}
