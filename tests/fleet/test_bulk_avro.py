"""The bulk decoder and encoder against fastavro (fleet.avro), on random and edge records."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import numpy as np
import pytest

from fleet.avro import AvroDecodeError, Codec, anomaly_codec, load_schema, telemetry_codec
from fleet.bulk_avro import (
    AnomalyBatchDecoder,
    AnomalyBatchEncoder,
    TelemetryBatchDecoder,
    varint_block,
)
from fleet.contract import FAILURE_MODES, SENSOR_TYPES, SENSORS
from ml import features as ft
from ml.registry import LoadedModel
from ml.scorer import anomaly_events

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
FLOAT_EDGES = [0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, math.nan, 1e-45, 3.4e38, -3.4e38, 1e-40]
INT_EDGES = [0, -1, 1, 63, 64, -64, -65, 8191, 8192, *INT32]
LONG_EDGES = [0, -1, 1, 2**31, -(2**31) - 1, 2**53, *INT64]


def f32(value: float) -> float:
    """The value a float field holds after an Avro round trip."""
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def random_record(rng: random.Random) -> dict[str, Any]:
    edge = rng.random() < 0.3
    record: dict[str, Any] = {
        "car_id": rng.choice(["car1", "", "car-ü-äöß", "x" * 200, f"car{rng.randrange(10**6)}"]),
        "event_time": rng.choice(LONG_EDGES) if edge else rng.randrange(0, 2**41),
        "seq": rng.choice(LONG_EDGES) if edge else rng.randrange(0, 10**6),
    }
    for name in SENSORS:
        if SENSOR_TYPES[name] is float:
            value = rng.choice(FLOAT_EDGES) if edge else rng.uniform(-2000, 2000)
            record[name] = f32(value)
        else:
            record[name] = rng.choice(INT_EDGES) if edge else rng.randrange(-50, 3000)
    record["failure_occurred"] = rng.choice([None, True, False])
    record["failure_modes"] = rng.choice(
        [None, [], rng.sample(FAILURE_MODES, rng.randrange(1, 5)), ["ü" * 70]]
    )
    return record


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def assert_columns_match(columns: dict[str, Any], records: list[dict[str, Any]]) -> None:
    assert len(columns["seq"]) == len(records)
    for i, record in enumerate(records):
        for name in ("car_id", "event_time", "seq", "failure_occurred"):
            assert columns[name][i] == record[name], (i, name)
        for name in SENSORS:
            assert same(float(columns[name][i]), float(record[name])), (i, name, record[name])
        modes = record["failure_modes"]
        assert columns["failure_modes"][i] == (None if modes is None else tuple(modes))


def test_random_and_edge_records_decode_like_fastavro() -> None:
    rng = random.Random(7)
    codec = telemetry_codec()
    records = [random_record(rng) for _ in range(3000)]
    messages = codec.encode_many(records)
    decoded = [codec.decode(m) for m in messages]  # fastavro's reading is the reference
    batch = TelemetryBatchDecoder().decode(messages)
    assert batch.errors == [] and batch.fallback == 0
    assert batch.index.tolist() == list(range(len(records)))
    assert_columns_match(batch.columns, decoded)
    # A second batch hits the caches and gives the same answer.
    again = TelemetryBatchDecoder().decode(messages[:50] + messages[:50])
    assert_columns_match(again.columns, decoded[:50] + decoded[:50])


def test_feature_columns_equal_the_record_path() -> None:
    from ml import simdata

    records = simdata.simulated_records(30, 5, seed=3, profile="seed", failure_rate=3.0)
    messages = telemetry_codec().encode_many(records)
    batch = TelemetryBatchDecoder().decode(messages)
    expected = ft.columns_from_records([telemetry_codec().decode(m) for m in messages])
    np.testing.assert_array_equal(ft.raw_features(batch.columns), ft.raw_features(expected))
    assert batch.columns["car_id"].tolist() == expected["car_id"].tolist()


def test_bad_messages_fall_back_and_fail_like_fastavro() -> None:
    rng = random.Random(8)
    codec = telemetry_codec()
    good = codec.encode_many([random_record(rng) for _ in range(6)])
    # An older writer version the codec knows: decoded by fleet.avro (resolution rules).
    old_schema = load_schema("telemetry-v1") | {
        "fields": [f for f in load_schema("telemetry-v1")["fields"] if f["name"] != "failure_modes"]
    }
    old_record = {k: v for k, v in random_record(rng).items() if k != "failure_modes"}
    old = Codec(old_schema).encode(old_record)
    reading_codec = Codec(load_schema("telemetry-v1"), also_reads=[old_schema])
    messages = [
        good[0],
        good[1][:-3],  # truncated
        b"\x00\x01" + good[2][2:],  # not single-object
        good[3] + b"\x00",  # trailing bytes: fastavro ignores them, so does the fallback
        old,
        good[4][:12],  # truncated inside the car id
        b"",
        good[5][:10] + b"\x02\x80\x80",  # car id "ab"-length then a broken varint
        good[5],
    ]
    batch = TelemetryBatchDecoder(reading_codec).decode(messages)
    assert batch.index.tolist() == [0, 3, 4, 8]
    assert batch.fallback == 2
    assert [i for i, _ in batch.errors] == [1, 2, 5, 6, 7]
    for i, error in batch.errors:
        with pytest.raises(type(error)):
            reading_codec.decode(messages[i])
    expected_old = reading_codec.decode(old)
    assert expected_old["failure_modes"] is None
    assert_columns_match(
        {k: v[1:3] for k, v in batch.columns.items()},
        [reading_codec.decode(good[3]), expected_old],
    )
    assert batch.columns["car_id"][3] == codec.decode(good[5])["car_id"]
    # An unknown writer version is an error, not a guess.
    unknown = TelemetryBatchDecoder().decode([old])
    assert len(unknown) == 0 and len(unknown.errors) == 1


def test_empty_batch() -> None:
    batch = TelemetryBatchDecoder().decode([])
    assert len(batch) == 0 and batch.columns["seq"].shape == (0,)


def test_varint_block_matches_the_reference_encoder() -> None:
    from fleet.avro import zigzag_varint

    rng = random.Random(1)
    values = [*LONG_EDGES, *range(-300, 300), *(rng.randrange(*INT64) for _ in range(500))]
    block, lengths = varint_block(values)
    for row, length, value in zip(block, lengths, values, strict=True):
        assert bytes(row[:length]) == zigzag_varint(value)


@pytest.mark.parametrize("top", [0, 1, 3])
def test_bulk_anomaly_encoding_is_byte_identical_to_fastavro(top: int) -> None:
    from fleet.avro import anomaly_codec

    rng = np.random.default_rng(top)
    n = 500
    normalizer = ft.Normalizer(ft.FEATURES, np.zeros(len(ft.FEATURES)), np.ones(len(ft.FEATURES)))
    model = LoadedModel("fleet-ä", "v20261125T000000000Z", None, normalizer, 0.75, {})
    records = [
        {
            "car_id": rng.choice(["car1", "car22", "", "ü-car"]) + str(i % 7),
            "event_time": int(rng.choice([0, -1, 2**62, 1_567_606_196_000 + i])),
            "seq": int(rng.integers(-(2**40), 2**40)),
        }
        for i in range(n)
    ]
    errors = rng.random((n, len(ft.FEATURES))).astype(np.float32)
    scores = errors.mean(axis=1).astype(np.float64)
    scores[:3] = [math.nan, math.inf, -0.0]
    events = anomaly_events(
        records, scores=scores, errors=errors, model=model, top=top, scored_at=1_700_000_000_123
    )
    expected = anomaly_codec().encode_many(events)
    k = min(top, errors.shape[1])
    top_index = np.argsort(-errors, axis=1)[:, :k]
    got = AnomalyBatchEncoder().encode(
        car_ids=np.array([r["car_id"] for r in records], object),
        event_time=[r["event_time"] for r in records],
        seq=[r["seq"] for r in records],
        scores=scores,
        threshold=model.threshold,
        is_anomaly=scores >= model.threshold,
        model_name=model.name,
        model_version=model.version,
        top_index=top_index,
        top_values=np.take_along_axis(errors, top_index, axis=1),
        names=ft.FEATURES,
        scored_at=1_700_000_000_123,
    )
    assert got == expected


@pytest.mark.parametrize("decoder", [TelemetryBatchDecoder, AnomalyBatchDecoder])
def test_a_batch_of_only_short_messages_is_all_errors(decoder: type) -> None:
    batch = decoder().decode([b"", b"\xc3\x01abc"])
    assert len(batch) == 0
    assert [i for i, _ in batch.errors] == [0, 1]


def random_score(rng: random.Random) -> dict[str, Any]:
    edge = rng.random() < 0.3
    return {
        "car_id": rng.choice(["car1", "", "car-ü", "x" * 200, f"car{rng.randrange(10**6)}"]),
        "event_time": rng.choice(LONG_EDGES) if edge else rng.randrange(0, 2**41),
        "seq": rng.choice(LONG_EDGES) if edge else rng.randrange(0, 10**6),
        "score": rng.choice([*FLOAT_EDGES, 1e300]) if edge else rng.random() * 3,
        "threshold": rng.random(),
        "is_anomaly": rng.random() < 0.5,
        "model_name": rng.choice(["fleet-autoencoder", "", "m" * 300]),
        "model_version": rng.choice(["20261126T000000Z", "ü" * 70]),
        "top_sensors": [
            {"sensor": rng.choice((*SENSORS, "ü" * 70)), "contribution": rng.random()}
            for _ in range(rng.choice([0, 1, 3, 5, 70]))
        ],
        "scored_at": rng.choice(LONG_EDGES) if edge else rng.randrange(0, 2**41),
    }


def test_scores_decode_like_fastavro() -> None:
    rng = random.Random(9)
    codec = anomaly_codec()
    records = [random_score(rng) for _ in range(2000)]
    messages = codec.encode_many(records)
    batch = AnomalyBatchDecoder().decode(messages)
    # Non-ASCII strings are left to the codec (it checks UTF-8); the rest are parsed here.
    non_ascii = sum(
        not all(
            text.isascii()
            for text in (
                r["model_name"],
                r["model_version"],
                *(t["sensor"] for t in r["top_sensors"]),
            )
        )
        for r in records
    )
    assert batch.errors == []
    assert batch.fallback == non_ascii > 0
    for i, message in enumerate(messages):
        record = codec.decode(message)
        for name in ("car_id", "event_time", "seq", "score", "threshold", "is_anomaly"):
            value = batch.columns[name][i]
            assert same(value if name == "car_id" else value.item(), record[name]), (i, name)


def test_bad_scores_fail_like_fastavro() -> None:
    rng = random.Random(10)
    codec = anomaly_codec()
    good = codec.encode_many([random_score(rng) for _ in range(40)])
    messages = [m[:cut] for m in good for cut in (len(m) - 1, len(m) // 2, 11)]
    messages += [
        good[0] + b"\x00",  # trailing bytes: fastavro ignores them, so does the fallback
        good[1][:-9] + b"\x01",  # top sensors' last block cut short
        good[2],
        codec.encode(random_score(rng) | {"model_version": "vé"}),  # non-ASCII
        # Not UTF-8 in the model name, and in a sensor name: fastavro refuses both.
        codec.encode(random_score(rng) | {"model_name": "abc"}).replace(b"abc", b"\xff\xfe\xfd"),
        codec.encode(
            random_score(rng) | {"top_sensors": [{"sensor": "xyz", "contribution": 1.0}]}
        ).replace(b"xyz", b"x\xc3y"),
    ]
    batch = AnomalyBatchDecoder().decode(messages)
    errors = {i for i, _ in batch.errors}
    for i, message in enumerate(messages):
        try:
            codec.decode(message)
        except AvroDecodeError:
            assert i in errors, i
        else:
            assert i not in errors, i
    assert len(batch) == len(messages) - len(errors)
