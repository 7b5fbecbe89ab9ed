"""Unit tests of the pure validation, sequencing and CSV parsing (no servers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.avro import telemetry_codec
from fleet.contract import PHYSICAL_RANGES, SENSORS
from ingest.csv_import import BadHeader, column_index, numbered_rows, parse_row
from ingest.sequence import Sequencer
from ingest.validation import (
    REASONS,
    Reading,
    Rejected,
    car_id_from_topic,
    parse_payload,
    to_record,
    validate_message,
)
from tests.ingest.helpers import named_reason_path as slow_path
from tests.ingest.helpers import valid_payload, valid_sensors

DATA = Path(__file__).parent.parent / "data"
TOPIC = "vehicles/sensor/data/car1"


def reason(outcome: object) -> str:
    assert isinstance(outcome, Rejected), outcome
    return outcome.reason


def with_sensor(name: str, value: object) -> bytes:
    data = valid_sensors() | {name: value}
    return json.dumps(data).encode()


def test_a_valid_reading_is_accepted_with_its_own_timestamp_seq_and_labels() -> None:
    payload = valid_payload(
        3, timestamp_ms=1_700_000_000_123, seq=7, failure_occurred=True, failure_modes=["coolant"]
    )
    outcome = validate_message(TOPIC, payload, 16_384)
    assert not isinstance(outcome, Rejected)
    car_id, reading = outcome
    assert car_id == "car1"
    assert reading.timestamp_ms == 1_700_000_000_123
    assert reading.seq == 7
    assert reading.failure_occurred is True
    assert reading.failure_modes == ["coolant"]
    assert set(reading.sensors) == set(SENSORS)
    record = to_record(car_id, reading, 1_700_000_000_123, 7)
    decoded = telemetry_codec().decode(telemetry_codec().encode(record))
    assert decoded["failure_modes"] == ["coolant"]
    assert decoded["car_id"] == "car1"
    assert {k: decoded[k] for k in SENSORS} == pytest.approx(reading.sensors, rel=1e-6)


def test_the_seed_label_strings_are_accepted() -> None:
    data = valid_sensors() | {"failure_occurred": "false"}
    reading = parse_payload(json.dumps(data).encode(), 16_384)
    assert isinstance(reading, Reading)
    assert reading.failure_occurred is False


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        (TOPIC, b"{not json", "not_json"),
        (TOPIC, b"\xff\xfe", "not_json"),
        (TOPIC, b"[1, 2]", "not_object"),
        (TOPIC, b'"speed"', "not_object"),
        (
            TOPIC,
            json.dumps({k: v for k, v in valid_sensors().items() if k != "speed"}),
            "missing_field",
        ),
        (TOPIC, with_sensor("speed", "fast"), "wrong_type"),
        (TOPIC, with_sensor("speed", True), "wrong_type"),
        (TOPIC, with_sensor("tire_pressure_1_1", 31.5), "wrong_type"),
        (TOPIC, with_sensor("speed", None), "wrong_type"),
        (TOPIC, valid_payload()[:-1] + b',"speed":NaN}', "not_finite"),
        (TOPIC, valid_payload()[:-1] + b',"coolant_temp":Infinity}', "not_finite"),
        (
            TOPIC,
            valid_payload().replace(b'"coolant_temp":', b'"coolant_temp":1e999,"x":'),
            "not_finite",
        ),
        (TOPIC, with_sensor("tire_pressure_1_1", -3), "out_of_range"),
        (TOPIC, with_sensor("throttle_pos", 1.5), "out_of_range"),
        (TOPIC, with_sensor("speed", -1.0), "out_of_range"),
        (TOPIC, valid_payload(timestamp_ms=1_700_000_000), "out_of_range"),  # seconds, not ms
        (TOPIC, valid_payload(seq=-1), "out_of_range"),
        (TOPIC, valid_payload(failure_modes=["wings"]), "out_of_range"),
        (TOPIC, valid_payload()[:-1] + b',"pad":"' + b"x" * 20_000 + b'"}', "oversized"),
        ("vehicles/sensor/data/", valid_payload(), "car_id"),
        ("vehicles/sensor/data/" + "x" * 65, valid_payload(), "car_id"),
        ("vehicles/sensor/data/car 1", valid_payload(), "car_id"),
        ("vehicles/sensor/data/car$1", valid_payload(), "car_id"),
        ("vehicles/sensor/data/bridge", valid_payload(), "car_id"),
        ("vehicles/sensor/data/car1/extra", valid_payload(), "topic"),
        ("vehicles/other/car1", valid_payload(), "topic"),
        # Found by a hostile-input catalog (issue 16): each once crashed or fooled the bridge.
        (TOPIC, with_sensor("speed", 10**400), "out_of_range"),  # float() overflowed
        (TOPIC, valid_payload()[:-1] + b',"x":' + b"[" * 3000 + b"]" * 3000 + b"}", "too_deep"),
        (TOPIC, valid_payload()[:-1] + b',"x":' + b'{"a":' * 33 + b"1" + b"}" * 34, "too_deep"),
        (TOPIC, valid_payload()[:-1] + b',"x\xff":"\xfe"}', "not_json"),  # invalid UTF-8
        (TOPIC, valid_payload()[:-1] + b',"x":"\xc0\x80"}', "not_json"),  # overlong NUL
        (TOPIC, b'{"speed":-5,' + valid_payload()[1:], "duplicate_field"),
        (TOPIC, valid_payload()[:-1] + b',"x":{"a":1,"a":2}}', "duplicate_field"),
        (
            TOPIC,
            "\ufeff".encode("utf-16-le") + valid_payload().decode().encode("utf-16-le"),
            "not_json",
        ),
        (TOPIC, b"\xef\xbb\xbf" + valid_payload(), "not_json"),  # a UTF-8 byte-order mark
        (TOPIC, valid_payload()[:-1] + b',"x":' + b"9" * 5000 + b"}", "not_json"),
        (TOPIC, valid_payload()[:-1] + b',"x":"a\x00b"}', "not_json"),  # raw NUL in a string
    ],
)
def test_every_kind_of_bad_input_is_rejected_with_its_reason(
    topic: str, payload: bytes | str, expected: str
) -> None:
    raw = payload.encode() if isinstance(payload, str) else payload
    outcome = validate_message(topic, raw, 16_384, reserved={"bridge", "fleet-gateway"})
    assert reason(outcome) == expected
    assert expected in REASONS


def test_a_car_id_of_64_safe_characters_is_fine() -> None:
    assert car_id_from_topic("vehicles/sensor/data/" + "a-Z_9." * 10 + "abcd") == (
        "a-Z_9." * 10 + "abcd"
    )


def test_sequence_uses_the_cars_own_counter_else_an_increasing_clock() -> None:
    seq = Sequencer()
    assert seq.next("car1", 5, 1_000) == 5
    assert seq.next("car2", None, 1_000) == 1_000
    assert seq.next("car2", None, 1_000) == 1_001  # same microsecond: still increasing
    assert seq.next("car2", None, 999) == 1_002  # clock stepped back: still increasing
    assert seq.next("car2", None, 5_000) == 5_000
    # A restarted bridge (new Sequencer) continues above what was handed out before.
    assert Sequencer().next("car2", None, 6_000) > 5_000


def test_the_seed_sample_parses_row_by_row() -> None:
    lines = (DATA / "car-sensor-sample.csv").read_text().splitlines(keepends=True)
    index = column_index(next(iter([lines[0].strip().split(",")])))
    parsed = [parse_row(index, row) for _n, _raw, row in numbered_rows(lines[1:])]
    assert len(parsed) == 1000
    assert not [p for p in parsed if isinstance(p, Rejected)]
    car_id, event_time, reading = parsed[0]  # type: ignore[misc]
    assert (car_id, event_time) == ("car1", 1_567_606_196_000)
    assert reading.sensors["tire_pressure_1_1"] == 32


def test_bad_csv_rows_and_headers() -> None:
    index = column_index(["time", "car", *SENSORS])
    good = ["1567606196", "car1", *(str(v) for v in valid_sensors().values())]
    assert not isinstance(parse_row(index, good), Rejected)
    assert reason(parse_row(index, good[:5])) == "missing_field"
    assert reason(parse_row(index, ["x", *good[1:]])) == "wrong_type"
    assert reason(parse_row(index, ["1567606196000", *good[1:]])) == "out_of_range"  # ms
    assert reason(parse_row(index, [good[0], "", *good[2:]])) == "car_id"
    assert reason(parse_row(index, [*good[:2], "nan", *good[3:]])) == "not_finite"
    with pytest.raises(BadHeader, match="speed"):
        column_index(["time", "car", "coolant_temp"])


def mutations() -> list[bytes]:
    """Valid payloads and near misses of every kind the fast path must not get wrong."""
    base = valid_sensors(2)
    out = [valid_payload(i, timestamp_ms=1_700_000_000_000 + i, seq=i) for i in range(7)]
    odd_values: list[object] = [
        None, True, False, "1", 0, 1, -1, 30, 30.0, 31.5, 1.0, 0.5, -0.0, 1e308, -1e308,
        2**63, 2**64 + 1, -(2**70), [], {}, 1e-320,
    ]  # fmt: skip
    for name in SENSORS:
        low, high = PHYSICAL_RANGES[name]
        for value in [*odd_values, low, high, low - 1, high + 1, int(low), int(high)]:
            out.append(json.dumps(base | {name: value}).encode())
    for field, values in {
        "timestamp": [None, 1_700_000_000_000, 1.7e12, 1_700_000_000_000.5, "1", True, 2**64],
        "seq": [None, 0, -1, 3.0, 2**63 - 1, 2**63, "7", False],
        "failure_occurred": [None, True, False, "true", "false", "yes", 1, 0],
        "failure_modes": [None, [], ["coolant"], ["coolant", "coolant"], ["wings"], "coolant"],
    }.items():
        for value in values:
            out.append(json.dumps(base | {field: value}).encode())
    text = json.dumps(base)
    out += [
        text[:-1].encode() + b',"speed":NaN}',
        text[:-1].encode() + b',"speed":-Infinity}',
        text[:-1].encode() + b',"speed":1e999}',
        text[:-1].encode() + b',"speed":12.5,"speed":13.5}',  # duplicate: refused
        text[:-1].encode() + b',"speed":12.5,"speed":"x"}',
        b"{" + text[1:].encode(),
        text.encode() + b" ",
        text.encode() + b"x",
        b"\xef\xbb\xbf" + text.encode(),  # a byte-order mark
        text.replace('"speed"', '"sp\\u0065ed"').encode(),  # an escaped key
        text[:-1].encode() + b',"extra":{"deep":[1,2,{"x":null}]}}',
        text[:-1].encode() + b',"extra":1}',  # unknown fields: the slow path, accepted
        text[:-1].encode() + b',"seq":null}',
        text[:-1].encode() + b', "note" : "a:b"}',
        text.replace(":", " : ").encode(),
        text.replace('"speed": ', '"speed":1' + "0" * 400 + ',"x":').encode(),
    ]
    return out


def test_the_fast_path_decides_exactly_as_the_per_field_checks() -> None:
    from ingest.validation import decode_valid

    fast_hits = 0
    for payload in mutations():
        expected = slow_path(payload)
        got = parse_payload(payload, 1 << 20)
        if isinstance(expected, Rejected):
            assert isinstance(got, Rejected), payload
            assert got.reason == expected.reason, payload
            assert decode_valid(payload) is None, payload
        else:
            assert got == expected, payload
            for name in SENSORS:  # same values and the same Python types
                assert type(got.sensors[name]) is type(expected.sensors[name]), (payload, name)
            fast_hits += decode_valid(payload) is not None
    assert fast_hits > 100  # the fast path really took the common case


def test_the_readme_lists_every_dead_letter_reason() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = {
        line.split("|")[1].strip(" `") for line in readme.splitlines() if line.startswith("  | `")
    }
    assert set(REASONS) <= table
