"""Rotation rules as a pure state machine: which records go into which object.

A partition's log is cut into consecutive *segments* of offsets. A segment holds one file per
event hour that occurs in it; all its files are uploaded together and then the offset after
the segment is committed. So the committed offset is always a segment boundary, and a
replay starts a segment exactly where the crashed run started one.

Cuts that decide content are computed from the records alone (never from wall-clock time or
poll boundaries), so a replay from a segment boundary cuts at the same offsets and writes the
same objects, byte for byte:

- ``count``:  the segment reached ``max_records`` records (cut after the record);
- ``bytes``:  its Avro payloads reached ``max_bytes`` (cut after the record): no unbounded buffer;
- ``window``: the record's event time is past the segment's event-time window (cut *before* it):
  windows are ``window_ms`` slots of ``event_time - grace_ms``, and a record whose slot is newer
  than every slot in the segment cuts; older (late) records never cut, they go to their own
  hour's file;
- ``schema``: the record was written with another schema than the segment's (cut before it).

One cut is not computable from the records: the **flush** of a thin stream, so its data does
not wait in Kafka for the next record. It is allowed only when the consumer has read to the end
of the partition, and its offset is committed before anything after it is uploaded. Why no
duplicate can arise from it: every object a crashed run uploaded but did not commit lies in the
chain of record cuts from the last committed offset ``c``, except possibly the last segment
``[r, x)``, cut by a flush at ``x``. A replay starts at ``c``, repeats the same record cuts (it
cannot flush before ``x``: ``x`` was already below the end of the log), so it reaches ``r`` and
builds a segment ``[r, y)`` with ``y >= x`` (no record rule fired in ``[r, x)``). For each hour,
the first offset of that hour in ``[r, y)`` equals its first offset in ``[r, x)``: same name, a
superset of the records, and the old object is overwritten rather than duplicated.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from lake.naming import HOUR_MS, hour_of


@dataclass(frozen=True)
class Rules:
    max_records: int = 200_000
    max_bytes: int = 32 * 1024 * 1024
    window_ms: int = HOUR_MS
    grace_ms: int = 0

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1:
            raise ValueError("max_records and max_bytes must be positive")
        if self.window_ms < 1 or HOUR_MS % self.window_ms:
            raise ValueError("window_ms must divide one hour")
        if self.grace_ms < 0:
            raise ValueError("grace_ms must not be negative")


@dataclass
class HourFile:
    """The records of one event hour inside one segment: one object."""

    hour: int
    first_offset: int
    payloads: list[bytes] = field(default_factory=list)
    min_time: int = 2**63 - 1
    max_time: int = -(2**63)
    cars: set[str] = field(default_factory=set)


@dataclass
class Segment:
    partition: int
    start: int  # offset of its first record
    schema: Hashable
    end: int = 0  # offset after its last record (exclusive), set as records come
    count: int = 0
    size: int = 0
    window: int = -(2**63)  # the newest window slot seen
    files: dict[int, HourFile] = field(default_factory=dict)
    reason: str = ""  # why it was cut


class PartitionSegmenter:
    """Feeds one partition's records, in offset order, into segments."""

    def __init__(self, partition: int, rules: Rules) -> None:
        self.partition = partition
        self.rules = rules
        self.open: Segment | None = None

    def add(
        self,
        offset: int,
        event_time: int,
        car_id: str,
        payload: bytes,
        schema: Hashable = None,
    ) -> list[Segment]:
        """Add one record; return the segments this closed (zero, one, or two)."""
        rules = self.rules
        closed: list[Segment] = []
        segment = self.open
        slot = (event_time - rules.grace_ms) // rules.window_ms
        if segment is not None:
            if slot > segment.window:
                closed.append(self._cut("window"))
                segment = None
            elif schema != segment.schema:
                closed.append(self._cut("schema"))
                segment = None
        if segment is None:
            segment = self.open = Segment(self.partition, offset, schema)
        hour = hour_of(event_time)
        hour_file = segment.files.get(hour)
        if hour_file is None:
            hour_file = segment.files[hour] = HourFile(hour, offset)
        hour_file.payloads.append(payload)
        hour_file.cars.add(car_id)
        hour_file.min_time = min(hour_file.min_time, event_time)
        hour_file.max_time = max(hour_file.max_time, event_time)
        segment.count += 1
        segment.size += len(payload)
        segment.end = offset + 1
        segment.window = max(segment.window, slot)
        if segment.count >= rules.max_records:
            closed.append(self._cut("count"))
        elif segment.size >= rules.max_bytes:
            closed.append(self._cut("bytes"))
        return closed

    def flush(self, end: int) -> Segment | None:
        """Cut the open segment at ``end`` (the end of the log): only when caught up, see above."""
        if self.open is None:
            return None
        if end < self.open.end:
            raise ValueError(f"flush at {end} would cut inside the open segment")
        segment = self._cut("flush")
        segment.end = end
        return segment

    def _cut(self, reason: str) -> Segment:
        segment = self.open
        assert segment is not None
        segment.reason = reason
        self.open = None
        return segment
