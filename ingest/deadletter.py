"""Dead letters: the original bytes of rejected input, with why and where in Kafka headers."""

from __future__ import annotations

from ingest.validation import Rejected

Headers = list[tuple[str, bytes]]


def dead_letter_headers(
    rejected: Rejected, source: str, received_at_ms: int, **where: str | int
) -> Headers:
    """Headers of a dead letter: ``reason`` (a code from ``validation.REASONS``), ``detail``,
    ``source`` (``mqtt`` or ``csv``), ``received_at`` (ms) and where it came from (for MQTT
    ``mqtt_topic``; for CSV ``file`` and ``row``)."""
    headers: Headers = [
        ("reason", rejected.reason.encode()),
        ("detail", rejected.detail.encode()),
        ("source", source.encode()),
        ("received_at", str(received_at_ms).encode()),
    ]
    headers += [(key, str(value).encode()) for key, value in where.items()]
    return headers


def header_dict(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka message headers as a dict of text, for tests and tools."""
    return {key: (value or b"").decode() for key, value in headers or []}
