"""`fleet ingest csv FILE`: replay a CSV in the seed's format into the telemetry topic.

Format (the seed's ``car-sensor-data.csv``): header ``time,car,<the 18 sensors>``, ``time`` in
seconds since the Unix epoch (may be fractional); an optional ``failure_occurred`` column
(``true``/``false``) is kept as a label; other columns are ignored. The file's time becomes the
event time; the sequence is the event time in microseconds, made strictly increasing per car
(so importing the same file twice gives the same numbers, and consumers see duplicates).
Bad rows go to the dead-letter topic with their line number (``row``, the header is row 1).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import clients
from fleet.avro import telemetry_codec
from fleet.contract import SENSOR_TYPES, SENSORS
from fleet.settings import Settings
from ingest.deadletter import dead_letter
from ingest.sequence import Sequencer
from ingest.validation import (
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    MISSING_FIELD,
    NOT_FINITE,
    OUT_OF_RANGE,
    WRONG_TYPE,
    Reading,
    Rejected,
    check_car_id,
    to_record,
    validate_fields,
)

REQUIRED_COLUMNS = ("time", "car", *SENSORS)


class BadHeader(ValueError):
    """The file is not in the seed's format at all (nothing is imported)."""


def column_index(header: list[str]) -> dict[str, int]:
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [name for name in REQUIRED_COLUMNS if name not in index]
    if missing:
        raise BadHeader(f"header lacks the seed's columns {', '.join(missing)}")
    return index


def _number(text: str) -> float | int | str:
    """A CSV cell as the JSON number it stands for (or the text, which validation rejects)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_row(  # noqa: PLR0911 (one return per way a row can be bad)
    index: dict[str, int], row: list[str]
) -> tuple[str, int, Reading] | Rejected:
    """One data row -> (car id, event time ms, reading), or why not."""
    if len(row) < len(index):
        return Rejected(MISSING_FIELD, f"{len(row)} columns, the header has {len(index)}")
    car_id = row[index["car"]].strip()
    bad_car = check_car_id(car_id)
    if bad_car:
        return bad_car
    seconds = _number(row[index["time"]].strip())
    if isinstance(seconds, str):
        return Rejected(WRONG_TYPE, f"time {seconds[:40]!r} is not a number")
    if not math.isfinite(seconds):
        return Rejected(NOT_FINITE, f"time is {seconds}")
    event_time = round(seconds * 1000)
    if not MIN_TIMESTAMP_MS <= event_time < MAX_TIMESTAMP_MS:
        return Rejected(OUT_OF_RANGE, f"time {seconds} is not seconds between 2000 and 2100")
    data: dict[str, Any] = {name: _number(row[index[name]].strip()) for name in SENSOR_TYPES}
    if "failure_occurred" in index:
        data["failure_occurred"] = row[index["failure_occurred"]].strip().lower() or None
    reading = validate_fields(data)
    if isinstance(reading, Rejected):
        return reading
    return car_id, event_time, reading


@dataclass
class ImportStats:
    rows: int = 0
    produced: int = 0
    dead_lettered: int = 0
    failed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


def numbered_rows(lines: Iterable[str]) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, raw line, cells) for each non-empty data line; line 1 is the header."""
    for number, line in enumerate(lines, start=2):
        raw = line.rstrip("\r\n")
        if raw:
            yield number, raw, next(csv.reader([raw]))


def import_csv(
    settings: Settings,
    path: Path,
    batch_size: int = 5000,
    progress: Callable[[ImportStats], None] | None = None,
) -> ImportStats:
    """Produce every row of ``path`` (readings, or dead letters); wait until Kafka has them all."""
    codec = telemetry_codec()
    sequencer = Sequencer()
    stats = ImportStats()
    producer = clients.kafka_producer(settings)
    telemetry, dead_letters = settings.topics.telemetry, settings.topics.dead_letters

    def delivered(reason: str | None, err: Any, _msg: Any) -> None:
        if err is not None:
            stats.failed += 1
        elif reason is None:
            stats.produced += 1
        else:
            stats.dead_lettered += 1
            stats.by_reason[reason] = stats.by_reason.get(reason, 0) + 1

    def ok(err: Any, msg: Any) -> None:
        delivered(None, err, msg)

    def produce(topic: str, key: str | None, value: bytes, **kwargs: Any) -> None:
        while True:
            try:
                producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                producer.poll(0.1)

    with path.open(newline="", encoding="utf-8", errors="replace") as lines:
        header = next(csv.reader([lines.readline()]), [])
        index = column_index(header)
        batch: list[dict[str, Any]] = []

        def flush_batch() -> None:
            for record, value in zip(batch, codec.encode_many(batch), strict=True):
                produce(telemetry, record["car_id"], value, on_delivery=ok)
            batch.clear()
            producer.poll(0)
            if progress:
                progress(stats)

        for number, raw, row in numbered_rows(lines):
            stats.rows += 1
            parsed = parse_row(index, row)
            if isinstance(parsed, Rejected):
                value, headers = dead_letter(
                    parsed,
                    raw.encode(),
                    settings.ingest.dead_letter_payload_bytes,
                    "csv",
                    int(time.time() * 1000),
                    file=path.name,
                    row=number,
                )
                produce(
                    dead_letters,
                    None,
                    value,
                    headers=headers,
                    on_delivery=lambda err, msg, r=parsed.reason: delivered(r, err, msg),
                )
                continue
            car_id, event_time, reading = parsed
            seq = sequencer.next(car_id, None, event_time * 1000)
            batch.append(to_record(car_id, reading, event_time, seq))
            if len(batch) >= batch_size:
                flush_batch()
        flush_batch()
    left = producer.flush(60)
    stats.failed += left
    if progress:
        progress(stats)
    return stats
