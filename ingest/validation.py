"""Validation of one car reading, as pure functions over plain data (no I/O, no clock).

A reading arrives as an MQTT topic and JSON bytes (or as a CSV row). It is either accepted as a
:class:`Reading` or rejected with a :class:`Rejected` whose ``reason`` is a short code (the
dead-letter header) and ``detail`` a human sentence.

The JSON payload uses the seed's field names: the 18 sensors are required, and these are
optional:

* ``timestamp`` — when the reading was taken, integer milliseconds since the Unix epoch (UTC);
  without it the bridge stamps the receive time.
* ``seq`` — the car's own reading counter (a non-negative integer); without it the bridge
  derives one (see ``ingest.sequence``).
* ``failure_occurred`` (``true``/``false`` or the seed's strings ``"true"``/``"false"``) and
  ``failure_modes`` (a list of names from ``fleet.contract.FAILURE_MODES``): simulator labels.

Other fields are ignored, so cars may send more than the platform reads.

The payload is JSON as RFC 8259 has it between systems: UTF-8 without a byte-order mark,
object keys unique (a repeated key is refused rather than letting the last one win, so a
reading means one thing to every parser), nested at most ``MAX_NESTING`` levels deep.

Validation is total: every payload yields a :class:`Reading` or a :class:`Rejected`, never an
exception (``tests/ingest/test_validation_fuzz.py`` holds it to that).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, NamedTuple, cast

import msgspec

from fleet.contract import FAILURE_MODES, PHYSICAL_RANGES, SENSOR_TYPES, SENSORS

TOPIC_PREFIX: Final = "vehicles/sensor/data/"
CAR_ID_MAX_LENGTH: Final = 64
SAFE_CAR_ID: Final = re.compile(r"[A-Za-z0-9_.-]+")
#: Timestamps outside [2000-01-01, 2100-01-01) are taken for a unit mix-up (seconds, µs).
MIN_TIMESTAMP_MS: Final = 946_684_800_000
MAX_TIMESTAMP_MS: Final = 4_102_444_800_000
MAX_SEQ: Final = 2**63 - 1
#: Objects and arrays inside one another, the payload itself being level 1.
MAX_NESTING: Final = 32
_FAILURE_MODES: Final = frozenset(FAILURE_MODES)

# Reason codes (the `reason` header of a dead letter).
TOPIC = "topic"
CAR_ID = "car_id"
OVERSIZED = "oversized"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
NOT_FINITE = "not_finite"
OUT_OF_RANGE = "out_of_range"
DUPLICATE_FIELD = "duplicate_field"
TOO_DEEP = "too_deep"
# The bridge's own reasons (not about a payload's content).
RETAINED = "retained"
POISON = "poison"
REASONS: Final = (
    TOPIC,
    CAR_ID,
    OVERSIZED,
    NOT_JSON,
    NOT_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    NOT_FINITE,
    OUT_OF_RANGE,
    DUPLICATE_FIELD,
    TOO_DEEP,
    RETAINED,
    POISON,
)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # one of REASONS
    detail: str


@dataclass(frozen=True, slots=True)
class Reading:
    """A valid reading: sensors by name, plus what the source said about time and order."""

    sensors: dict[str, float | int]
    timestamp_ms: int | None = None
    seq: int | None = None
    failure_occurred: bool | None = None
    failure_modes: list[str] | None = None


_MISSING: Final[Any] = object()


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NonFinite(name)


class _Duplicate(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s object hook: an object whose keys are unique, or ``_Duplicate``."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return data


def nesting_depth(value: Any) -> int:
    """How many objects and arrays deep ``value`` goes (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item)
    return deepest


def _shown(value: Any, width: int = 40) -> str:
    """A value for a message, cut to ``width`` characters (numbers can be thousands long)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**width else "a huge integer"
    return text if len(text) <= width else text[: width - 1] + "…"


def check_car_id(car_id: str, reserved: Collection[str] = ()) -> Rejected | None:
    """None if ``car_id`` is acceptable; ``reserved`` are service accounts, never cars."""
    if not car_id:
        return Rejected(CAR_ID, "empty car id")
    if len(car_id) > CAR_ID_MAX_LENGTH:
        return Rejected(CAR_ID, f"car id longer than {CAR_ID_MAX_LENGTH} characters")
    if not SAFE_CAR_ID.fullmatch(car_id):
        return Rejected(CAR_ID, f"car id {car_id[:80]!r} has characters outside [A-Za-z0-9_.-]")
    if car_id in reserved:
        return Rejected(CAR_ID, f"car id {car_id!r} is a service account, not a car")
    return None


def car_id_from_topic(topic: str, reserved: Collection[str] = ()) -> str | Rejected:
    """The car id is the last level of ``vehicles/sensor/data/<car-id>``."""
    if not topic.startswith(TOPIC_PREFIX):
        return Rejected(TOPIC, f"topic {topic[:200]!r} is not {TOPIC_PREFIX}<car-id>")
    car_id = topic[len(TOPIC_PREFIX) :]
    if "/" in car_id:
        return Rejected(TOPIC, f"topic {topic[:200]!r} has levels after the car id")
    return check_car_id(car_id, reserved) or car_id


def _number(name: str, value: Any, kind: type) -> float | int | Rejected:
    # bool is an int in Python but never a sensor value.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Rejected(WRONG_TYPE, f"{name} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        return Rejected(NOT_FINITE, f"{name} is {value}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        return Rejected(WRONG_TYPE, f"{name} must be an integer, got {value}")
    low, high = PHYSICAL_RANGES[name]
    # Compared before converting: Python compares an int of any size with a float exactly,
    # while float() of a 400-digit integer overflows.
    if not low <= value <= high:
        return Rejected(OUT_OF_RANGE, f"{name}={_shown(value)} outside [{low:g}, {high:g}]")
    return int(value) if kind is int else float(value)


def _integer(name: str, value: Any, low: int, high: int) -> int | Rejected:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            return Rejected(WRONG_TYPE, f"{name} must be an integer, got {_shown(value)}")
    if not low <= value <= high:
        return Rejected(OUT_OF_RANGE, f"{name}={_shown(value)} outside [{low}, {high}]")
    return value


def _labels(data: Mapping[str, Any]) -> tuple[bool | None, list[str] | None] | Rejected:
    occurred = data.get("failure_occurred")
    if occurred is not None:
        if isinstance(occurred, str) and occurred in ("true", "false"):
            occurred = occurred == "true"
        elif not isinstance(occurred, bool):
            return Rejected(WRONG_TYPE, "failure_occurred must be true/false")
    modes = data.get("failure_modes")
    if modes is not None:
        if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
            return Rejected(WRONG_TYPE, "failure_modes must be a list of strings")
        unknown = set(modes) - _FAILURE_MODES
        if unknown:
            return Rejected(OUT_OF_RANGE, f"unknown failure modes {_shown(sorted(unknown), 200)}")
    return occurred, modes


_CHECKS: Final[list[tuple[str, type, float, float]]] = [
    (name, kind, *PHYSICAL_RANGES[name]) for name, kind in SENSOR_TYPES.items()
]


def validate_fields(data: Mapping[str, Any]) -> Reading | Rejected:
    """Check a decoded reading (field name -> value) against the telemetry contract."""
    sensors: dict[str, float | int] = {}
    for name, kind, low, high in _CHECKS:
        value: Any = data.get(name, _MISSING)
        # The common case in one test per field: a float (or an int for int sensors) in range.
        if type(value) is kind and low <= cast(float, value) <= high:
            sensors[name] = cast(float | int, value)
            continue
        if value is _MISSING:
            return Rejected(MISSING_FIELD, f"missing {name}")
        checked = _number(name, value, kind)
        if isinstance(checked, Rejected):
            return checked
        sensors[name] = checked
    timestamp = data.get("timestamp")
    if timestamp is not None:
        timestamp = _integer("timestamp", timestamp, MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS - 1)
        if isinstance(timestamp, Rejected):
            return timestamp
    seq = data.get("seq")
    if seq is not None:
        seq = _integer("seq", seq, 0, MAX_SEQ)
        if isinstance(seq, Rejected):
            return seq
    labels = _labels(data)
    if isinstance(labels, Rejected):
        return labels
    return Reading(sensors, timestamp, seq, *labels)


class WireReading(NamedTuple):
    """A valid payload's values: sensors in ``SENSORS`` order, then the optional fields."""

    sensors: tuple[float | int, ...]
    timestamp_ms: int | None
    seq: int | None
    failure_occurred: bool | None
    failure_modes: list[str] | None


def _wire_struct() -> type[msgspec.Struct]:
    """A msgspec type that accepts exactly the payloads ``validate_fields`` accepts as they
    are (exact types, inside the ranges); anything else fails and takes the slow path."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, kind in SENSOR_TYPES.items():
        low, high = PHYSICAL_RANGES[name]
        if kind is int:
            low, high = math.ceil(low), math.floor(high)
        fields.append((name, Annotated[kind, msgspec.Meta(ge=low, le=high)]))
    fields += [
        (
            "timestamp",
            Annotated[int, msgspec.Meta(ge=MIN_TIMESTAMP_MS, lt=MAX_TIMESTAMP_MS)] | None,
            None,
        ),
        ("seq", Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)] | None, None),
        ("failure_occurred", bool | Literal["true", "false"] | None, None),
        ("failure_modes", list[Literal[FAILURE_MODES]] | None, None),  # type: ignore[valid-type]
    ]
    return msgspec.defstruct("Wire", fields, array_like=False, gc=False)


_WIRE: Final = _wire_struct()
_DECODER: Final = msgspec.json.Decoder(_WIRE)
_SENSOR_COUNT: Final = len(SENSORS)
_FIELD_COUNT: Final = len(_WIRE.__struct_fields__)  # the sensors, then the optional fields


def decode_valid(payload: bytes) -> WireReading | None:
    """The fast path (parsing and checks in C): a payload that is valid as it stands, or None
    (then ``parse_payload``'s slow path accepts it after conversions or says why not).

    It takes only payloads whose keys are exactly the fields it decoded, each once: ASCII, and
    as many colons as non-null fields (every key brings one colon, and no accepted value holds
    one). So an unknown, repeated or null field, a nested object, and any non-ASCII byte all
    go to the slow path, which alone decides the rules msgspec does not know (unique keys,
    strict UTF-8, nesting). Two scans in C: well under a microsecond for a reading."""
    if not payload.isascii():
        return None
    try:
        wire = _DECODER.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    values = msgspec.structs.astuple(wire)
    if payload.count(b":") != _FIELD_COUNT - values.count(None):
        return None
    occurred = values[_SENSOR_COUNT + 2]
    if type(occurred) is str:
        occurred = occurred == "true"
    return WireReading(
        values[:_SENSOR_COUNT],
        values[_SENSOR_COUNT],
        values[_SENSOR_COUNT + 1],
        occurred,
        values[_SENSOR_COUNT + 3],
    )


def _utf8(payload: bytes) -> str | Rejected:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(NOT_JSON, f"not UTF-8: {exc.reason} at byte {exc.start}")
    if text.startswith("\ufeff"):
        return Rejected(NOT_JSON, "starts with a byte-order mark (JSON payloads are plain UTF-8)")
    return text


def load_json(payload: bytes) -> Any | Rejected:
    """The payload as Python data under the contract's JSON rules (module docstring)."""
    text = _utf8(payload)
    if isinstance(text, Rejected):
        return text
    try:
        data = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except _NonFinite as exc:
        return Rejected(NOT_FINITE, f"JSON has the non-finite number {exc}")
    except _Duplicate as exc:
        return Rejected(DUPLICATE_FIELD, f"field {_shown(str(exc))} appears more than once")
    except RecursionError:
        data = _MISSING  # deeper than the parser goes, so deeper than MAX_NESTING
    except ValueError as exc:  # JSONDecodeError, and integers of over 4,300 digits
        return Rejected(NOT_JSON, f"not JSON: {str(exc)[:200]}")
    if data is _MISSING or nesting_depth(data) > MAX_NESTING:
        return Rejected(TOO_DEEP, f"nested deeper than {MAX_NESTING} levels")
    return data


def parse_payload(payload: bytes, max_bytes: int) -> Reading | Rejected:
    """Decode and validate one JSON payload."""
    if len(payload) > max_bytes:
        return Rejected(OVERSIZED, f"payload of {len(payload)} bytes exceeds {max_bytes}")
    wire = decode_valid(payload)
    if wire is not None:
        return Reading(dict(zip(SENSORS, wire.sensors, strict=True)), *wire[1:])
    data = load_json(payload)
    if isinstance(data, Rejected):
        return data
    if not isinstance(data, dict):
        return Rejected(NOT_OBJECT, f"JSON {type(data).__name__} instead of an object")
    return validate_fields(data)


def validate_message(
    topic: str, payload: bytes, max_bytes: int, reserved: Collection[str] = ()
) -> tuple[str, Reading] | Rejected:
    """A whole MQTT message: the car id from the topic, the reading from the payload."""
    car_id = car_id_from_topic(topic, reserved)
    if isinstance(car_id, Rejected):
        return car_id
    reading = parse_payload(payload, max_bytes)
    if isinstance(reading, Rejected):
        return reading
    return car_id, reading


def to_record(car_id: str, reading: Reading, event_time_ms: int, seq: int) -> dict[str, Any]:
    """A telemetry-v1 record (the Avro schema's fields)."""
    return {
        "car_id": car_id,
        "event_time": event_time_ms,
        "seq": seq,
        **reading.sensors,
        "failure_occurred": reading.failure_occurred,
        "failure_modes": reading.failure_modes,
    }


def reading_payload(
    sensors: Mapping[str, Any],
    timestamp_ms: int | None = None,
    seq: int | None = None,
    failure_occurred: bool | None = None,
    failure_modes: list[str] | None = None,
) -> bytes:
    """The JSON payload a car (or the simulator) publishes: the inverse of parse_payload."""
    data: dict[str, Any] = dict(sensors)
    if timestamp_ms is not None:
        data["timestamp"] = timestamp_ms
    if seq is not None:
        data["seq"] = seq
    if failure_occurred is not None:
        data["failure_occurred"] = failure_occurred
    if failure_modes is not None:
        data["failure_modes"] = failure_modes
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
