"""Validation is total: hostile payloads, random and structured, fed to the bridge's decode path.

Every payload must yield a Reading or a Rejected with a known reason (never an exception), and
the fast path (msgspec) must never accept what the named-reason path (the standard library's
parser under the contract's rules) would refuse, or accept it differently."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet.contract import SENSORS
from ingest.validation import (
    REASONS,
    Reading,
    Rejected,
    decode_valid,
    parse_payload,
    validate_message,
)
from tests.ingest.helpers import named_reason_path, valid_payload, valid_sensors

MAX_BYTES = 16_384
VALID = valid_payload(3)
FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def bridge_decode(payload: bytes) -> Reading | Rejected:
    """What the bridge does with a payload (``Bridge._decode``): the fast path when it fits,
    else the named-reason path."""
    wire = decode_valid(payload) if len(payload) <= MAX_BYTES else None
    if wire is not None:
        return Reading(dict(zip(SENSORS, wire.sensors, strict=True)), *wire[1:])
    return parse_payload(payload, MAX_BYTES)


def check_total(payload: bytes) -> None:
    outcome = bridge_decode(payload)  # raises on a non-total path: the test fails
    assert isinstance(outcome, Reading | Rejected)
    if isinstance(outcome, Rejected):
        assert outcome.reason in REASONS, outcome
        assert len(outcome.detail) < 1_000  # a dead-letter header, not a copy of the payload
    if len(payload) <= MAX_BYTES:
        reference = named_reason_path(payload)
        if isinstance(reference, Rejected):
            assert isinstance(outcome, Rejected), payload[:200]
            assert outcome.reason == reference.reason, payload[:200]
            assert decode_valid(payload) is None, payload[:200]
        else:
            assert outcome == reference, payload[:200]
    outcome_with_topic = validate_message("vehicles/sensor/data/car1", payload, MAX_BYTES)
    assert isinstance(outcome_with_topic, tuple | Rejected)


def nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


# Structured hostile pieces, spliced into or around a valid reading.
HOSTILE = st.one_of(
    st.builds(nested, st.integers(1, 5000), st.sampled_from(["array", "object"])),
    st.builds(lambda n: b"1" + b"0" * n, st.integers(300, 6000)),  # huge integers
    st.builds(lambda n: b"-1" + b"0" * n + b".5e3", st.integers(300, 400)),
    st.sampled_from([b"1e999", b"-1e999", b"NaN", b"Infinity", b"-0", b"1E-400", b"null"]),
    st.builds(lambda b: b'"' + b + b'"', st.binary(max_size=40)),  # any bytes in a string
    st.sampled_from([b'"\x00"', b'"\\u0000"', b'"\\ud800"', b'"\xc0\x80"', b'"\xed\xa0\x80"']),
    st.builds(lambda n: b'"' + b"x" * n + b'"', st.sampled_from([10, 20_000, 1 << 20])),
)
KEYS = st.sampled_from([*SENSORS, "seq", "timestamp", "failure_modes", "x", "speed"]) | st.text(
    max_size=8
)


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    """A valid reading with a hostile field added, or a field's value replaced by one."""
    piece = draw(HOSTILE)
    key = json.dumps(draw(KEYS)).encode()
    if draw(st.booleans()):
        return VALID[:-1] + b"," + key + b":" + piece + b"}"
    return b"{" + key + b":" + piece + b"," + VALID[1:]


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    """A valid reading with a few bytes replaced, inserted or cut, or wrapped in odd encodings."""
    data = bytearray(draw(st.sampled_from([VALID, valid_payload(5, seq=3, timestamp_ms=2**40)])))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "cut"]))
        byte = draw(st.sampled_from([0, 0xFF, 0xC3, 0x80, 0xEF, 0xBB, 0xBF, ord('"'), ord(":")]))
        if action == "insert" or pos == len(data):
            data.insert(pos, byte)
        elif action == "replace":
            data[pos] = byte
        else:
            del data[pos : pos + draw(st.integers(1, 20))]
    wrap = draw(st.sampled_from(["none", "utf8-bom", "utf16", "utf16-bom", "utf32"]))
    text = bytes(data)
    if wrap == "utf8-bom":
        return b"\xef\xbb\xbf" + text
    if wrap.startswith("utf16"):
        body = text.decode("utf-8", "replace").encode("utf-16-le")
        return (b"\xff\xfe" if wrap == "utf16-bom" else b"") + body
    if wrap == "utf32":
        return text.decode("utf-8", "replace").encode("utf-32")
    return text


@st.composite
def duplicated(draw: st.DrawFn) -> bytes:
    """A valid reading with one of its own fields repeated, with any value, anywhere."""
    name = draw(st.sampled_from(SENSORS))
    value = draw(st.sampled_from([valid_sensors(3)[name], -5, 1e6, "x", None]))
    extra = json.dumps({name: value})[1:-1].encode()
    return (
        VALID[:-1] + b"," + extra + b"}" if draw(st.booleans()) else b"{" + extra + b"," + VALID[1:]
    )


@FUZZ
@given(st.binary(max_size=2_000))
@example(b"")
@example(b"\x00" * 100)
def test_random_bytes_never_raise(payload: bytes) -> None:
    check_total(payload)


@FUZZ
@given(spliced())
@example(VALID[:-1] + b',"x":' + nested(3000, "array") + b"}")
@example(VALID.replace(b'"speed":', b'"speed":1' + b"0" * 400 + b',"y":'))
@example(VALID[:-1] + b',"x":"' + b"x" * (1 << 20) + b'"}')
def test_hostile_fields_never_raise_and_both_paths_agree(payload: bytes) -> None:
    check_total(payload)


@FUZZ
@given(corrupted())
def test_corrupted_readings_never_raise_and_both_paths_agree(payload: bytes) -> None:
    check_total(payload)


@FUZZ
@given(duplicated())
def test_a_repeated_field_is_always_refused(payload: bytes) -> None:
    check_total(payload)
    outcome = bridge_decode(payload)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "duplicate_field"


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=50,
    )
)
def test_any_json_value_as_an_extra_field_never_raises(value: object) -> None:
    payload = VALID[:-1] + b',"extra":' + json.dumps(value).encode() + b"}"
    check_total(payload)
