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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from lake.naming import HOUR_MS, hour_of


class _Batch(NamedTuple):
    offsets: np.ndarray
    event_times: np.ndarray
    hours: np.ndarray
    slots: np.ndarray
    cars: Sequence[bytes]
    payloads: Sequence[bytes]


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
    cars: set[bytes] = field(default_factory=set)


@dataclass
class Segment:
    partition: int
    start: int  # offset of its first record
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

    def add(self, offset: int, event_time: int, car_id: bytes, payload: bytes) -> list[Segment]:
        """Add one record; return the segments this closed (zero, one, or two).

        The reference implementation of the rules; :meth:`add_batch` is the fast path and
        must cut exactly where a sequence of ``add`` calls would.
        """
        rules = self.rules
        closed: list[Segment] = []
        segment = self.open
        slot = (event_time - rules.grace_ms) // rules.window_ms
        if segment is not None and slot > segment.window:
            closed.append(self._cut("window"))
            segment = None
        if segment is None:
            segment = self.open = Segment(self.partition, offset)
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

    def add_batch(
        self,
        offsets: np.ndarray,
        event_times: np.ndarray,
        cars: Sequence[bytes],
        payloads: Sequence[bytes],
        sizes: np.ndarray | None = None,
    ) -> list[Segment]:
        """Add records in offset order, vectorized; the same cuts as one ``add`` per record."""
        rules = self.rules
        n = len(offsets)
        if sizes is None:
            sizes = np.fromiter(map(len, payloads), np.int64, n)
        slots = (event_times - rules.grace_ms) // rules.window_ms
        hours = event_times // HOUR_MS
        closed: list[Segment] = []
        i = 0
        while i < n:
            if self.open is None:
                self.open = Segment(self.partition, int(offsets[i]))
            segment = self.open
            rest = slots[i:]
            # Window: the first record whose slot is newer than every slot before it in the
            # segment (the first record of an empty segment never cuts).
            before = np.maximum.accumulate(rest)
            newest = np.empty_like(rest)
            newest[0] = segment.window
            np.maximum(before[:-1], segment.window, out=newest[1:])
            newer = np.flatnonzero(rest > newest)
            if segment.count == 0 and len(newer) and newer[0] == 0:
                newer = newer[1:]
            window_at = int(newer[0]) + i if len(newer) else n + 1
            count_end = i + rules.max_records - segment.count
            cum = np.cumsum(sizes[i:]) + segment.size
            reach = int(np.searchsorted(cum, rules.max_bytes))  # first index with cum >= cap
            bytes_end = i + reach + 1 if reach < len(cum) else n + 1
            end = min(n, count_end, bytes_end, window_at)
            batch = _Batch(offsets, event_times, hours, slots, cars, payloads)
            self._take(segment, batch, i, end, cum)
            if end == count_end:
                closed.append(self._cut("count"))
            elif end == bytes_end:
                closed.append(self._cut("bytes"))
            elif end == window_at:
                closed.append(self._cut("window"))
            i = end
        return closed

    @staticmethod
    def _take(segment: Segment, batch: _Batch, i: int, end: int, cum: np.ndarray) -> None:
        """Move records [i, end) of the batch into the segment's hour files."""
        offsets, event_times, hours, slots, cars, payloads = batch
        if end <= i:
            return
        chunk_hours = hours[i:end]
        first_hour, last_hour = int(chunk_hours.min()), int(chunk_hours.max())
        groups: list[tuple[int, np.ndarray | None]]
        if first_hour == last_hour:
            groups = [(first_hour, None)]
        else:
            groups = [
                (int(h), np.flatnonzero(chunk_hours == h) + i) for h in np.unique(chunk_hours)
            ]
        for hour, idx in groups:
            if idx is None:
                first = int(offsets[i])
                times = event_times[i:end]
                new_payloads = list(payloads[i:end])
                new_cars = cars[i:end]
            else:
                first = int(offsets[idx[0]])
                times = event_times[idx]
                new_payloads = [payloads[k] for k in idx]
                new_cars = [cars[k] for k in idx]
            hour_file = segment.files.get(hour)
            if hour_file is None:
                hour_file = segment.files[hour] = HourFile(hour, first)
            hour_file.payloads.extend(new_payloads)
            hour_file.cars.update(new_cars)
            hour_file.min_time = min(hour_file.min_time, int(times.min()))
            hour_file.max_time = max(hour_file.max_time, int(times.max()))
        segment.count += end - i
        segment.size = int(cum[end - 1 - i])
        segment.end = int(offsets[end - 1]) + 1
        segment.window = max(segment.window, int(slots[i:end].max()))

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
