"""The projector against the real stack: Kafka in, MongoDB twins out."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.avro import telemetry_codec
from fleet.settings import Settings
from fleet.waiting import wait_for
from tests.twin.factories import T0, envelopes, reading, score
from tests.twin.kafka_helpers import (
    all_twins,
    cli_env,
    events_applied,
    produce,
    running_projector,
    twins_collection,
    with_twin,
)
from twin.events import ms_to_datetime
from twin.fold import condition_key, fold, recent_keys

pytestmark = pytest.mark.integration
FLEET = Path(sys.executable).with_name("fleet")


def expected_twin(records: list[dict], window: int = 50) -> dict:
    """The pure fold of one car's readings in the order they were produced (as Kafka has them:
    through Avro, whose floats are 32-bit)."""
    codec = telemetry_codec()
    on_kafka = [codec.decode(codec.encode(r)) for r in records]
    result = fold(None, records[0]["car_id"], envelopes(on_kafka), dedupe_window=window)
    assert result.twin is not None
    return result.twin


def comparable(twin: dict) -> dict:
    """A twin without its Kafka positions (offsets differ from the pure fold's)."""
    return {k: v for k, v in twin.items() if k != "positions"}


def test_out_of_order_and_duplicate_readings_within_and_across_batches(
    fresh_settings: Settings,
) -> None:
    settings = with_twin(fresh_settings, batch_size=7, dedupe_window=10)
    rng = random.Random(7)
    per_car: dict[str, list[dict]] = {}
    for c in range(12):
        car = f"car{c}"
        records = [reading(car, seq=s) for s in range(15)]
        rng.shuffle(records)  # out of order within the car's partition
        records.insert(5, dict(records[2]))  # a duplicate reading (a new Kafka offset)
        per_car[car] = records
    interleaved = [r for group in zip(*per_car.values(), strict=True) for r in group]
    produce(settings, interleaved)

    with running_projector(settings):
        wait_for(
            lambda: events_applied(settings) == len(interleaved),
            timeout=60,
            what="every event on the twins",
        )
    twins = all_twins(settings)
    assert set(twins) == set(per_car)
    for car, records in per_car.items():
        twin = twins[car]
        assert comparable(twin) == comparable(expected_twin(records, window=10))
        assert twin["last_reading"]["seq"] == 14  # the newest by event time, whatever the order
        assert twin["reported"]["coolant_temp"]["value"] == reading(car, seq=14)["coolant_temp"]
        assert recent_keys(twin) == sorted(recent_keys(twin))
        assert twin["counters"]["duplicates_skipped"] == 1
        assert twin["counters"]["late_skipped"] > 0
        assert twin["first_seen"] == ms_to_datetime(T0)
        (position,) = [p for p in twin["positions"] if p["topic"] == settings.topics.telemetry]
        assert position["offset"] >= len(records) - 1


def test_the_same_events_delivered_again_after_a_restart_change_nothing(
    fresh_settings: Settings,
) -> None:
    records = [reading(f"car{c}", seq=s) for s in range(6) for c in range(8)]
    # Three of the last five readings above the threshold (0.5): each car in alarm from seq 3.
    scores = [score(f"car{c}", seq=s, value=0.6 if s else 0.1) for s in range(4) for c in range(8)]
    produce(fresh_settings, records)
    produce(fresh_settings, scores)
    with running_projector(fresh_settings):
        wait_for(
            lambda: events_applied(fresh_settings) == len(records) + len(scores),
            timeout=60,
            what="every event on the twins",
        )
    before = all_twins(fresh_settings)
    # A new consumer group starts from the beginning: every event is delivered again.
    regroup = fresh_settings.model_copy(
        update={"groups": fresh_settings.groups.model_copy(update={"twin": "again"})}
    )
    with running_projector(regroup) as projector:
        wait_for(
            lambda: projector.applied.redelivered == len(records) + len(scores),
            timeout=60,
            what="every event redelivered",
        )
        assert projector.applied.events == 0
    assert all_twins(fresh_settings) == before
    assert before["car3"]["anomaly"]["score"] == pytest.approx(0.6)
    assert before["car3"]["anomaly"]["anomalous_since"] == ms_to_datetime(T0 + 3 * 10_000)
    assert before["car3"]["revision"] == 10


def test_health_conditions_of_each_failure_mode_on_the_twins(
    stack_env: dict[str, str], fresh_settings: Settings
) -> None:
    failures = {
        "tires": {"tire_pressure_1_2": 22},
        "shocks": {"accelerometer_2_2_value": 3.4},
        "shaft": {"engine_vibration_amplitude": 3000.0},  # speed 20 x 150
        "firmware": {"control_unit_firmware": 1000},
    }
    records = []
    for s in range(3):
        for car, broken in failures.items():
            records.append(reading(car, seq=s, **(broken if s >= 1 else {})))
        # coolant: +0.5 degC per A per step at 10 A
        records.append(reading("coolant", seq=s, coolant_temp=50.0 + 5.0 * s))
        records.append(reading("healthy", seq=s))
    produce(fresh_settings, records)
    with running_projector(fresh_settings):
        wait_for(lambda: events_applied(fresh_settings) == len(records), 60, "all readings")
    twins = all_twins(fresh_settings)
    keys = {car: [condition_key(c) for c in t["health"]["conditions"]] for car, t in twins.items()}
    assert keys == {
        "tires": ["tire_pressure_low_1_2"],
        "shocks": ["shock_absorber_2_2"],
        "shaft": ["drive_shaft_vibration"],
        "firmware": ["firmware_outdated"],
        "coolant": ["coolant_overheating"],
        "healthy": [],
    }
    since = {car: [c["since"] for c in t["health"]["conditions"]] for car, t in twins.items()}
    assert since["tires"] == [ms_to_datetime(T0 + 10_000)]
    assert twins["healthy"]["health"]["status"] == "ok"
    assert twins["tires"]["health"]["status"] == "attention"
    names = {i["name"] for i in twins_collection(fresh_settings).list_indexes()}
    assert {"condition", "anomalous", "last_seen_car", "firmware", "car_id"} <= names

    # The same, through the CLI.
    env = cli_env(stack_env, fresh_settings) | {"COLUMNS": "200"}  # rich: no wrapping

    def fleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FLEET), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    listed = fleet("twin", "list", "--condition", "tire_pressure_low", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["_id"] for line in listed.stdout.splitlines()] == ["tires"]
    table = fleet("twin", "list", "--firmware", "1000")
    assert table.returncode == 0, table.stderr
    assert "firmware_outdated" in table.stdout and "1 twin(s)" in table.stdout
    got = fleet("twin", "get", "shocks")
    assert got.returncode == 0, got.stderr
    assert condition_key(json.loads(got.stdout)["health"]["conditions"][0]) == "shock_absorber_2_2"
    missing = fleet("twin", "get", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "fleet: error: no twin for car 'nope'"
    bad = fleet("twin", "list", "--condition", "flat")
    assert bad.returncode == 2 and "choose from" in bad.stderr
