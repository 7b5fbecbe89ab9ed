"""Object names of the lake: where a file lives is a pure function of its content's position.

``<dataset>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset>.avro``, where the
date and hour are the records' EVENT hour (UTC) and the first offset is the Kafka offset of the
first record of that hour in the file. Same records in, same name out: a replay after a crash
overwrites an object instead of adding a copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

#: The two datasets: name -> object prefix (the version is the lake schema's, not Kafka's).
DATASET_PREFIXES = {"telemetry": "telemetry/v1", "anomalies": "anomalies/v1"}

_NAME = re.compile(
    r"^(?P<prefix>.+)/date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"(?P<topic>[^/+]+)\+(?P<partition>\d+)\+(?P<offset>\d+)\.avro$"
)


def hour_of(event_time_ms: int) -> int:
    """The event hour as an integer: hours since the epoch (UTC)."""
    return event_time_ms // HOUR_MS


def hour_prefix(dataset_prefix: str, hour: int) -> str:
    start = datetime.fromtimestamp(hour * 3600, tz=UTC)
    return f"{dataset_prefix}/date={start:%Y-%m-%d}/hour={start:%H}/"


def day_prefix(dataset_prefix: str, day: int) -> str:
    """``day`` is days since the epoch."""
    start = datetime.fromtimestamp(day * 86400, tz=UTC)
    return f"{dataset_prefix}/date={start:%Y-%m-%d}/"


def object_name(dataset_prefix: str, hour: int, topic: str, partition: int, first: int) -> str:
    return f"{hour_prefix(dataset_prefix, hour)}{topic}+{partition}+{first}.avro"


@dataclass(frozen=True)
class ObjectName:
    prefix: str
    hour: int
    topic: str
    partition: int
    first_offset: int


def parse_object_name(name: str) -> ObjectName | None:
    """The parts of a lake object name, or None for anything else in the bucket."""
    match = _NAME.match(name)
    if match is None:
        return None
    start = datetime.strptime(match["date"], "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(
        hours=int(match["hour"])
    )
    return ObjectName(
        match["prefix"],
        int(start.timestamp()) // 3600,
        match["topic"],
        int(match["partition"]),
        int(match["offset"]),
    )


def prefixes_for_range(dataset_prefix: str, start_ms: int | None, end_ms: int | None) -> list[str]:
    """The fewest listing prefixes covering event times in [start_ms, end_ms).

    Whole days inside the range are listed by their date prefix, the ragged ends hour by hour;
    an open range lists the whole dataset.
    """
    if start_ms is None or end_ms is None:
        return [f"{dataset_prefix}/"]
    if end_ms <= start_ms:
        return []
    first_hour, last_hour = hour_of(start_ms), hour_of(end_ms - 1)
    prefixes: list[str] = []
    hour = first_hour
    while hour <= last_hour:
        if hour % 24 == 0 and hour + 23 <= last_hour:
            prefixes.append(day_prefix(dataset_prefix, hour // 24))
            hour += 24
        else:
            prefixes.append(hour_prefix(dataset_prefix, hour))
            hour += 1
    return prefixes
