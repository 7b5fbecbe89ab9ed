"""Bulk Avro for the hot paths of the scorer and the twin projector: decode a whole batch of
telemetry or anomaly messages, encode a whole batch of anomaly events, with numpy over
concatenated bytes instead of fastavro per message (~15-20 µs each way, which capped one scorer
at ~16k events/s and the projector at ~25k).

Decoding: the telemetry-v1 layout is fixed (header, string, two longs, nine floats, four int
varints, four floats, one int varint, then the two label unions), so every message of a batch
is parsed at once: one vector of read positions advances field by field, varints are decoded
seven bits at a time across all messages, float runs are gathered as one ``(n, 4k)`` block.
Only the car id and the label tail are touched per message (a slice and a cache lookup: fleets
have few distinct car ids and label sets). Every message is checked: header and fingerprint,
bounds of every field, union indexes, and the message ending exactly where its last field
does. Anything else (another writer version, a corrupt body) goes to ``fleet.avro``'s codec,
which resolves the older versions it was given (``also_reads``) or raises the usual
``AvroDecodeError``. Anomaly messages are parsed the same way (the twin keeps a few of their
fields); one whose strings hold a non-ASCII byte goes to the codec too, which checks UTF-8.

Encoding: an anomaly event is the same layout for every reading, so the batch is assembled as
one ``(n, width)`` byte matrix with a mask of the bytes each row uses; ``matrix[mask]`` is all
messages back to back. Both directions are checked byte for byte against fastavro in
``tests/fleet/test_bulk_avro.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.avro import (
    HEADER_SIZE,
    AvroDecodeError,
    Codec,
    anomaly_codec,
    telemetry_codec,
    zigzag_varint,
)
from fleet.contract import SENSOR_TYPES, SENSORS, sensor_runs

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
TELEMETRY_FIELDS = ("car_id", "event_time", "seq", *SENSORS, "failure_occurred", "failure_modes")
ANOMALY_FIELDS = (
    "car_id",
    "event_time",
    "seq",
    "score",
    "threshold",
    "is_anomaly",
    "model_name",
    "model_version",
    "top_sensors",
    "scored_at",
)
MAX_VARINT = 10  # bytes of a 64-bit varint
#: Zero bytes after a batch's messages: fixed-width gathers of rows already rejected (a short
#: message read from its start) stay inside the buffer. Wider than any gather.
PAD = 64


def _check_layout(codec: Codec, expected: tuple[str, ...]) -> None:
    names = tuple(f["name"] for f in codec.schema["fields"])
    if names != expected:  # the layout below is this schema's
        raise ValueError(f"unexpected {codec.name} schema fields {names}")


# --- decoding ---------------------------------------------------------------------------------


def _varints(buf: U8, pos: I64, end: I64, ok: npt.NDArray[np.bool_]) -> tuple[I64, I64]:
    """Zig-zag varints at ``pos`` of every message: (values, positions after them).

    Clears ``ok`` (in place) for messages whose varint runs past their end or is too long.
    """
    raw = np.zeros(len(pos), np.uint64)
    length = np.zeros(len(pos), np.int64)
    active = ok.copy()
    last = len(buf) - 1
    for k in range(MAX_VARINT):
        if not active.any():
            break
        idx = pos + k
        inside = idx < end
        ok &= inside | ~active
        active &= inside
        byte = buf[np.where(active, idx, last)].astype(np.uint64)
        if k == MAX_VARINT - 1:
            ok &= ~active | (byte <= 1)  # a 64-bit value has one bit left in the tenth byte
        raw |= np.where(active, (byte & np.uint64(0x7F)) << np.uint64(7 * k), np.uint64(0))
        length += active
        active &= (byte & np.uint64(0x80)) != 0
    ok &= ~active  # still continuing after ten bytes
    value = (raw >> np.uint64(1)).view(np.int64) ^ -(raw & np.uint64(1)).view(np.int64)
    return value, pos + length


def _padded_buffer(blob: bytes) -> U8:
    return np.frombuffer(blob + bytes(PAD), np.uint8)


def _gather(buf: U8, pos: I64, width: int, end: I64, ok: npt.NDArray[np.bool_]) -> U8:
    """``width`` bytes at ``pos`` of every message as an (n, width) matrix; marks overruns."""
    ok &= pos + width <= end
    start = np.where(ok, pos, 0)
    return buf[start[:, None] + np.arange(width)]


@dataclass
class DecodedBatch:
    """Columns of the messages that decoded (input order kept), and the ones that did not."""

    columns: dict[str, npt.NDArray[Any]]
    index: npt.NDArray[np.intp]  # position in the input of each decoded row
    errors: list[tuple[int, AvroDecodeError]] = field(default_factory=list)
    fallback: int = 0  # messages decoded by fleet.avro (another writer version)

    def __len__(self) -> int:
        return len(self.index)


class TelemetryBatchDecoder:
    """Decodes telemetry-v1 single-object messages in bulk into feature-ready columns."""

    def __init__(self, codec: Codec | None = None, *, features: bool = True) -> None:
        """``features``: every sensor as float64 (the models' input); otherwise float sensors
        are float64 and int sensors int64, so that ``tolist()`` gives what fastavro gives."""
        self.codec = codec or telemetry_codec()
        self.features = features
        _check_layout(self.codec, TELEMETRY_FIELDS)
        self.header = np.frombuffer(self.codec.header, np.uint8)
        self.pieces = sensor_runs()  # float runs gathered as one block; ints one by one
        self._cars: dict[bytes, str] = {}
        self._labels: dict[bytes, tuple[bool | None, tuple[str, ...] | None]] = {}

    def decode(self, messages: Sequence[bytes]) -> DecodedBatch:
        n = len(messages)
        lengths = np.fromiter(map(len, messages), np.int64, n)
        blob = b"".join(messages)
        columns, ok, car_span, tail_start = self._fixed_fields(blob, lengths)
        good = self._per_message(blob, columns, ok, car_span, tail_start, np.cumsum(lengths))
        errors, fallback = _fall_back(
            self.codec, messages, good, lambda i, record: self._store(columns, i, record)
        )
        index = np.flatnonzero(np.asarray(good, bool))
        out = {name: values[index] for name, values in columns.items()}
        for name in SENSORS:
            as_int = not self.features and SENSOR_TYPES[name] is int
            out[name] = out[name].astype(np.int64 if as_int else np.float64)
        return DecodedBatch(out, index, errors, fallback)

    def _fixed_fields(
        self, blob: bytes, lengths: I64
    ) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.bool_], tuple[I64, I64], I64]:
        """Every field up to the labels, for all messages at once (vectorized).

        Returns the columns (car id and labels still empty), which messages parsed, the car
        ids' byte spans and where each label tail starts.
        """
        n = len(lengths)
        buf = _padded_buffer(blob)
        end = np.cumsum(lengths)
        start = end - lengths
        ok = lengths > HEADER_SIZE
        header = _gather(buf, start, HEADER_SIZE, end, ok)
        ok &= (header == self.header).all(axis=1)
        pos = start + HEADER_SIZE
        car_len, pos = _varints(buf, pos, end, ok)
        ok &= (car_len >= 0) & (pos + car_len <= end)
        car_start, pos = pos, pos + np.where(ok, car_len, 0)
        columns: dict[str, npt.NDArray[Any]] = {"car_id": np.empty(n, dtype=object)}
        columns["event_time"], pos = _varints(buf, pos, end, ok)
        columns["seq"], pos = _varints(buf, pos, end, ok)
        for kind, names in self.pieces:
            if kind == "f":
                width = 4 * len(names)
                block = _gather(buf, pos, width, end, ok).view("<f4")
                for j, name in enumerate(names):
                    columns[name] = block[:, j]
                pos = pos + width
            else:
                columns[names[0]], pos = _varints(buf, pos, end, ok)
        columns["failure_occurred"] = np.empty(n, dtype=object)
        columns["failure_modes"] = np.empty(n, dtype=object)
        return columns, ok, (car_start, car_start + car_len), pos

    def _per_message(  # noqa: PLR0917
        self,
        blob: bytes,
        columns: dict[str, npt.NDArray[Any]],
        ok: npt.NDArray[np.bool_],
        car_span: tuple[I64, I64],
        tail_start: I64,
        end: I64,
    ) -> list[bool]:
        """Car ids and label tails, one slice and one cache lookup each; which messages parsed."""
        car_ids, occurred, modes = (
            columns["car_id"],
            columns["failure_occurred"],
            columns["failure_modes"],
        )
        cars, labels = self._cars, self._labels
        good: list[bool] = ok.tolist()
        car_a, car_b = car_span[0].tolist(), car_span[1].tolist()
        tail_a, ends = tail_start.tolist(), end.tolist()
        for i in range(len(good)):
            if not good[i]:
                continue
            raw_car = blob[car_a[i] : car_b[i]]
            car = cars.get(raw_car)
            tail = blob[tail_a[i] : ends[i]]
            label = labels.get(tail)
            if car is None:
                car = self._car(raw_car)
            if label is None:
                label = self._label(tail)
            if car is None or label is None:
                good[i] = False
                continue
            car_ids[i] = car
            occurred[i], modes[i] = label
        return good

    @staticmethod
    def _store(columns: dict[str, npt.NDArray[Any]], i: int, record: dict[str, Any]) -> None:
        for name in ("car_id", "event_time", "seq", *SENSORS, "failure_occurred"):
            columns[name][i] = record.get(name)
        failure_modes = record.get("failure_modes")
        columns["failure_modes"][i] = None if failure_modes is None else tuple(failure_modes)

    def _car(self, raw: bytes) -> str | None:
        try:
            car = raw.decode()
        except UnicodeDecodeError:
            return None  # fastavro's decode names the error
        self._cars[raw] = car
        return car

    def _label(self, tail: bytes) -> tuple[bool | None, tuple[str, ...] | None] | None:
        """Parse ``failure_occurred`` and ``failure_modes``; None if malformed."""
        parsed = _parse_labels(tail)
        if parsed is not None:
            self._labels[tail] = parsed
        return parsed


class AnomalyBatchDecoder:
    """Decodes anomaly-v1 messages in bulk into the columns the twins fold: car id, event time,
    seq, score, threshold and verdict. The rest of each message (model, top sensors, scoring
    time) is checked to the message's end but not kept: the few rows that need it (a car's
    newest score) are decoded one at a time with the codec."""

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec or anomaly_codec()
        _check_layout(self.codec, ANOMALY_FIELDS)
        self.header = np.frombuffer(self.codec.header, np.uint8)
        self._cars: dict[bytes, str] = {}

    def decode(self, messages: Sequence[bytes]) -> DecodedBatch:
        n = len(messages)
        lengths = np.fromiter(map(len, messages), np.int64, n)
        blob = b"".join(messages)
        buf = _padded_buffer(blob)
        end = np.cumsum(lengths)
        start = end - lengths
        ok = lengths > HEADER_SIZE
        ok &= (_gather(buf, start, HEADER_SIZE, end, ok) == self.header).all(axis=1)
        car_start, pos = _string(buf, start + HEADER_SIZE, end, ok)
        car_end = pos
        columns: dict[str, npt.NDArray[Any]] = {}
        columns["event_time"], pos = _varints(buf, pos, end, ok)
        columns["seq"], pos = _varints(buf, pos, end, ok)
        doubles = _gather(buf, pos, 16, end, ok).view("<f8")
        columns["score"], columns["threshold"] = doubles[:, 0].copy(), doubles[:, 1].copy()
        flag = _gather(buf, pos + 16, 1, end, ok)[:, 0]
        ok &= flag <= 1
        columns["is_anomaly"] = flag == 1
        # Strings with a non-ASCII byte go to the codec, which checks their UTF-8.
        non_ascii = np.concatenate(([0], np.cumsum(buf >= 0x80)))
        name_start, pos = _string(buf, pos + 17, end, ok)
        plain = _ascii(non_ascii, name_start, pos)
        version_start, pos = _string(buf, pos, end, ok)
        plain &= _ascii(non_ascii, version_start, pos)
        pos = _skip_contributions(buf, pos, end, ok, non_ascii, plain)
        _scored_at, pos = _varints(buf, pos, end, ok)
        ok &= (pos == end) & plain
        columns["car_id"] = np.empty(n, dtype=object)
        good = self._cars_of(blob, columns["car_id"], ok, car_start, car_end)

        def store(i: int, record: dict[str, Any]) -> None:
            for name, column in columns.items():
                column[i] = record[name]

        errors, fallback = _fall_back(self.codec, messages, good, store)
        index = np.flatnonzero(np.asarray(good, bool))
        return DecodedBatch({k: v[index] for k, v in columns.items()}, index, errors, fallback)

    def _cars_of(
        self, blob: bytes, car_ids: npt.NDArray[Any], ok: npt.NDArray[np.bool_], a: I64, b: I64
    ) -> list[bool]:
        good: list[bool] = ok.tolist()
        cars = self._cars
        for i, (start, stop) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
            if not good[i]:
                continue
            raw = blob[start:stop]
            car = cars.get(raw)
            if car is None:
                try:
                    car = cars.setdefault(raw, raw.decode())
                except UnicodeDecodeError:
                    good[i] = False  # the codec names the error
                    continue
            car_ids[i] = car
        return good


def _fall_back(
    codec: Codec,
    messages: Sequence[bytes],
    good: list[bool],
    store: Callable[[int, dict[str, Any]], None],
) -> tuple[list[tuple[int, AvroDecodeError]], int]:
    """Messages the fast path did not parse, through fleet.avro: other writer versions decode
    (into this version's fields) and are stored, the rest are errors."""
    errors: list[tuple[int, AvroDecodeError]] = []
    fallback = 0
    for i in [i for i, g in enumerate(good) if not g]:
        try:
            record = codec.decode(messages[i])
        except AvroDecodeError as exc:
            errors.append((i, exc))
            continue
        good[i] = True
        fallback += 1
        store(i, record)
    return errors, fallback


def _string(buf: U8, pos: I64, end: I64, ok: npt.NDArray[np.bool_]) -> tuple[I64, I64]:
    """An Avro string (or bytes) at ``pos``: (where its bytes start, the position after it)."""
    size, pos = _varints(buf, pos, end, ok)
    ok &= (size >= 0) & (pos + size <= end)
    return pos, pos + np.where(ok, size, 0)


def _ascii(non_ascii: I64, start: I64, stop: I64) -> npt.NDArray[np.bool_]:
    """Whether bytes ``start:stop`` of each message are ASCII (``non_ascii``: the running count
    of bytes >= 0x80, one longer than the buffer). Rows already rejected may point anywhere."""
    last = len(non_ascii) - 1
    return non_ascii[np.clip(stop, 0, last)] == non_ascii[np.clip(start, 0, last)]


def _drop(
    ok: npt.NDArray[np.bool_], asked: npt.NDArray[np.bool_], passed: npt.NDArray[np.bool_]
) -> None:
    """Clear ``ok`` for the messages that were asked something and failed it."""
    ok &= ~(asked & ~passed)


def _skip_contributions(  # noqa: PLR0917
    buf: U8,
    pos: I64,
    end: I64,
    ok: npt.NDArray[np.bool_],
    non_ascii: I64,
    plain: npt.NDArray[np.bool_],
) -> I64:
    """Skip an Avro array of {string, double} records at ``pos``: blocks of items, each block
    a count (negative: followed by its byte size), a zero count ending the array. Clears
    ``plain`` where a string has a non-ASCII byte (``non_ascii``: their running count)."""
    open_ = ok.copy()
    while open_.any():
        read = open_.copy()
        count, after = _varints(buf, pos, end, read)
        _drop(ok, open_, read)
        open_ &= read
        pos = np.where(open_, after, pos)
        open_ &= count != 0
        sized = open_ & (count < 0)
        if sized.any():
            read = sized.copy()
            _size, after = _varints(buf, pos, end, read)
            _drop(ok, sized, read)
            open_ &= read | ~sized
            pos = np.where(sized & read, after, pos)
        count = np.abs(count)
        # An item takes at least 9 bytes (abs() of the lowest int64 stays negative).
        too_many = open_ & ((count < 0) | (count > (end - pos) // 9))
        ok &= ~too_many
        open_ &= ~too_many
        remaining = np.where(open_, count, 0)
        while (remaining > 0).any():
            item = remaining > 0
            read = item.copy()
            text_start, after = _string(buf, pos, end, read)
            read &= after + 8 <= end
            plain &= ~read | _ascii(non_ascii, text_start, after)
            _drop(ok, item, read)
            open_ &= read | ~item
            remaining = np.where(read, remaining - 1, 0)
            pos = np.where(read, after + 8, pos)
    return pos


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    for k in range(MAX_VARINT):
        byte = data[pos + k]  # IndexError past the end
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos + k + 1
    raise ValueError("varint too long")


def _parse_labels(tail: bytes) -> tuple[bool | None, tuple[str, ...] | None] | None:
    try:
        branch, pos = _read_long(tail, 0)
        occurred: bool | None = None
        if branch == 1:
            flag = tail[pos]
            if flag > 1:
                return None
            occurred, pos = flag == 1, pos + 1
        elif branch != 0:
            return None
        branch, pos = _read_long(tail, pos)
        modes: tuple[str, ...] | None = None
        if branch == 1:
            items: list[str] = []
            while True:
                count, pos = _read_long(tail, pos)
                if count == 0:
                    break
                if count < 0:  # a block with its byte size: skip the size
                    count = -count
                    _size, pos = _read_long(tail, pos)
                for _ in range(count):
                    size, pos = _read_long(tail, pos)
                    if size < 0 or pos + size > len(tail):
                        return None
                    items.append(tail[pos : pos + size].decode())
                    pos += size
            modes = tuple(items)
        elif branch != 0:
            return None
        return (occurred, modes) if pos == len(tail) else None
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return None


# --- encoding ---------------------------------------------------------------------------------


def varint_block(values: npt.ArrayLike) -> tuple[U8, I64]:
    """Zig-zag varints of int64 values as an (n, 10) byte matrix and each one's length."""
    v = np.asarray(values, np.int64)
    z = (v.view(np.uint64) << np.uint64(1)) ^ (v >> 63).view(np.uint64)
    shifts = np.arange(MAX_VARINT, dtype=np.uint64) * np.uint64(7)
    groups = (z[:, None] >> shifts[None, :]) & np.uint64(0x7F)
    # Length: index of the highest non-zero group + 1 (at least one byte).
    nonzero = groups != 0
    length = np.where(nonzero.any(axis=1), MAX_VARINT - np.argmax(nonzero[:, ::-1], axis=1), 1)
    more = np.arange(MAX_VARINT)[None, :] < (length[:, None] - 1)
    block = (groups | np.where(more, np.uint64(0x80), np.uint64(0))).astype(np.uint8)
    return block, length.astype(np.int64)


def _avro_string(text: str) -> bytes:
    data = text.encode()
    return zigzag_varint(len(data)) + data


def _padded(encoded: Sequence[bytes]) -> tuple[U8, I64]:
    """Byte strings as a zero-padded matrix and their lengths."""
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    width = int(lengths.max()) if len(encoded) else 0
    matrix = np.zeros((len(encoded), max(width, 1)), np.uint8)
    for i, data in enumerate(encoded):
        matrix[i, : len(data)] = np.frombuffer(data, np.uint8)
    return matrix, lengths


class AnomalyBatchEncoder:
    """Encodes a batch of anomaly events into anomaly-v1 single-object messages."""

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec or anomaly_codec()
        _check_layout(self.codec, ANOMALY_FIELDS)
        self.header = np.frombuffer(self.codec.header, np.uint8)

    def encode(
        self,
        *,
        car_ids: npt.NDArray[Any],
        event_time: npt.ArrayLike,
        seq: npt.ArrayLike,
        scores: npt.ArrayLike,
        threshold: float,
        is_anomaly: npt.ArrayLike,
        model_name: str,
        model_version: str,
        top_index: npt.NDArray[np.intp],
        top_values: npt.ArrayLike,
        names: Sequence[str],
        scored_at: int,
    ) -> list[bytes]:
        """One message per row. ``top_index`` (n, k) indexes ``names``; ``top_values`` (n, k)."""
        n = len(car_ids)
        if n == 0:
            return []
        blocks: list[tuple[U8, I64 | None]] = []  # (n, w) bytes, used length per row or all

        def const(data: bytes) -> None:
            blocks.append((np.broadcast_to(np.frombuffer(data, np.uint8), (n, len(data))), None))

        def doubles(values: npt.ArrayLike) -> None:
            column = np.ascontiguousarray(np.asarray(values, "<f8").reshape(n, 1))
            blocks.append((column.view(np.uint8), None))

        const(self.codec.header)
        unique, inverse = np.unique(np.asarray(car_ids).astype(str), return_inverse=True)
        strings, lengths = _padded([_avro_string(str(c)) for c in unique])
        blocks.append((strings[inverse], lengths[inverse]))
        blocks.append(varint_block(event_time))
        blocks.append(varint_block(seq))
        doubles(scores)
        doubles(np.full(n, threshold))
        flags = np.asarray(is_anomaly, bool).astype(np.uint8).reshape(n, 1)
        blocks.append((flags, None))
        const(_avro_string(model_name) + _avro_string(model_version))
        top_index = np.asarray(top_index).reshape(n, -1)
        k = top_index.shape[1]
        if k:
            values = np.asarray(top_values, np.float64).reshape(n, k)
            const(zigzag_varint(k))
            name_bytes, name_lengths = _padded([_avro_string(s) for s in names])
            for j in range(k):
                blocks.append((name_bytes[top_index[:, j]], name_lengths[top_index[:, j]]))
                doubles(values[:, j])
        const(b"\x00")  # end of the top_sensors array
        const(zigzag_varint(scored_at))

        matrix = np.concatenate([b for b, _ in blocks], axis=1)
        mask = np.concatenate(
            [
                np.ones(b.shape, bool)
                if used is None
                else np.arange(b.shape[1])[None, :] < used[:, None]
                for b, used in blocks
            ],
            axis=1,
        )
        data = matrix[mask].tobytes()
        ends = np.cumsum(mask.sum(axis=1)).tolist()
        starts = [0, *ends[:-1]]
        return [data[a:b] for a, b in zip(starts, ends, strict=True)]
