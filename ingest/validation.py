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
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                return Rejected(WRONG_TYPE, f"{name} must be an integer, got {value}")
            value = int(value)
    else:
        value = float(value)
    low, high = PHYSICAL_RANGES[name]
    if not low <= value <= high:
        return Rejected(OUT_OF_RANGE, f"{name}={value} outside [{low:g}, {high:g}]")
    return value


def _integer(name: str, value: Any, low: int, high: int) -> int | Rejected:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            return Rejected(WRONG_TYPE, f"{name} must be an integer, got {value!r:.40}")
    if not low <= value <= high:
        return Rejected(OUT_OF_RANGE, f"{name}={value} outside [{low}, {high}]")
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
            return Rejected(OUT_OF_RANGE, f"unknown failure modes {sorted(unknown)[:5]}")
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


def decode_valid(payload: bytes) -> WireReading | None:
    """The fast path (parsing and checks in C): a payload that is valid as it stands, or None
    (then ``parse_payload``'s slow path accepts it after conversions or says why not)."""
    try:
        wire = _DECODER.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    values = msgspec.structs.astuple(wire)
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


def parse_payload(payload: bytes, max_bytes: int) -> Reading | Rejected:
    """Decode and validate one JSON payload."""
    if len(payload) > max_bytes:
        return Rejected(OVERSIZED, f"payload of {len(payload)} bytes exceeds {max_bytes}")
    wire = decode_valid(payload)
    if wire is not None:
        return Reading(dict(zip(SENSORS, wire.sensors, strict=True)), *wire[1:])
    try:
        data = json.loads(payload, parse_constant=_refuse_constant)
    except _NonFinite as exc:
        return Rejected(NOT_FINITE, f"JSON has the non-finite number {exc}")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        return Rejected(NOT_JSON, f"not JSON: {str(exc)[:200]}")
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
