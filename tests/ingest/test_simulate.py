"""`fleet simulate`'s outputs: payloads and CSV rows (pure), then MQTT and Kafka on the stack."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from fleet.avro import telemetry_codec
from fleet.contract import SENSORS
from fleet.settings import Settings
from ingest.bridge import Bridge
from ingest.csv_import import column_index, parse_row
from ingest.outputs import CsvSink, json_payloads
from ingest.simulate import run_simulation
from ingest.simulator import FleetSimulator, SimulationConfig
from ingest.validation import Rejected, validate_message
from tests.ingest.helpers import TopicReader, short_lived

FLEET = str(Path(sys.executable).parent / "fleet")
START_S = 1_567_606_196


def test_mqtt_payloads_validate_back_to_the_simulated_readings_and_labels() -> None:
    batch = FleetSimulator(SimulationConfig(cars=200, failing_share=0.3, seed=3)).run(3)
    last = list(batch)[-1]
    payloads = json_payloads(last, 50, 200)
    assert len(payloads) == 150
    records = list(last.records())[50:]
    for payload, record in zip(payloads, records, strict=True):
        outcome = validate_message(f"vehicles/sensor/data/{record['car_id']}", payload, 16_384)
        assert not isinstance(outcome, Rejected), outcome
        _car, reading = outcome
        assert reading.timestamp_ms == record["event_time"]
        assert reading.seq == record["seq"] == 2
        assert reading.failure_occurred == record["failure_occurred"]
        assert reading.failure_modes == record["failure_modes"]
        assert reading.sensors == {name: record[name] for name in SENSORS}
    assert any(r["failure_modes"] for r in records)


def test_csv_output_is_in_the_seed_format_and_imports_back(tmp_path: Path) -> None:
    file = tmp_path / "fleet.csv"
    simulator = FleetSimulator(SimulationConfig(cars=30, start_time_ms=START_S * 1000))
    sink = CsvSink(file, labels=True)
    assert run_simulation(simulator, 4, sink, chunk=7) == 120
    sink.close()
    expected = [r for b in FleetSimulator(simulator.config).run(4) for r in b.records()]
    with file.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:20] == ["time", "car", *SENSORS]
    index = column_index(rows[0])
    assert len(rows) == 121
    assert rows[1][:2] == [str(START_S), "car1"]
    for row, record in zip(rows[1:], expected, strict=True):
        parsed = parse_row(index, row)
        assert not isinstance(parsed, Rejected), parsed
        car_id, event_time, reading = parsed
        assert (car_id, event_time) == (record["car_id"], record["event_time"])
        assert reading.failure_occurred == record["failure_occurred"]
        for name in SENSORS:  # the file holds float32 text, as the seed's does
            assert reading.sensors[name] == pytest.approx(np.float32(record[name]), rel=1e-6)


def simulate_env(stack_env: dict[str, str], settings: Settings) -> dict[str, str]:
    return (
        os.environ
        | stack_env
        | {
            "FLEET_TOPICS_TELEMETRY": settings.topics.telemetry,
            "FLEET_TOPICS_DEAD_LETTERS": settings.topics.dead_letters,
        }
    )


@pytest.mark.integration
def test_simulate_over_mqtt_through_the_bridge_carries_readings_and_ground_truth(
    fresh_settings: Settings, stack_env: dict[str, str]
) -> None:
    reader = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    try:
        with Bridge(
            short_lived(fresh_settings), client_id=f"bridge-{uuid.uuid4().hex[:6]}"
        ) as bridge:
            result = subprocess.run(
                [
                    FLEET,
                    "simulate",
                    "--cars=40",
                    "--steps=5",
                    "--interval=10",
                    f"--start={START_S}",
                    "--profile=seed",
                    "--failure-rate=20",
                    "--connections=2",
                    "--seed=5",
                ],
                env=simulate_env(stack_env, fresh_settings),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert "200 readings of 40 cars sent to mqtt" in result.stdout
            messages = reader.wait_count(200)
            assert bridge.stats.dead_lettered == 0
    finally:
        reader.close()
    got = sorted(
        (telemetry_codec().decode(m.value()) for m in messages),
        key=lambda r: (r["seq"], int(r["car_id"][3:])),
    )
    config = SimulationConfig(
        cars=40,
        interval_ms=10_000,
        start_time_ms=START_S * 1000,
        profile="seed",
        failure_rate=20,
        seed=5,
    )
    expected = [r for b in FleetSimulator(config).run(5) for r in b.records()]
    assert len(got) == len(expected) == 200
    for actual, wanted in zip(got, expected, strict=True):
        for key in ("car_id", "event_time", "seq", "failure_occurred", "failure_modes"):
            assert actual[key] == wanted[key]
        assert [actual[n] for n in SENSORS] == pytest.approx([wanted[n] for n in SENSORS], 1e-6)
    assert any(r["failure_occurred"] for r in got)


@pytest.mark.integration
def test_simulate_direct_to_kafka_writes_the_same_readings_as_the_model(
    fresh_settings: Settings, stack_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [FLEET, "simulate", "-o", "kafka", "--cars=300", "--duration=40", "--start=2024-01-01"],
        env=simulate_env(stack_env, fresh_settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    reader = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    try:
        messages = reader.wait_count(1200)
    finally:
        reader.close()
    codec = telemetry_codec()
    config = SimulationConfig(cars=300, start_time_ms=1_704_067_200_000)
    expected = {
        codec.encode(r) for b in FleetSimulator(config).run(4) for r in b.records()
    }  # byte for byte
    assert {m.value() for m in messages} == expected
    assert all(m.key().decode() == codec.decode(m.value())["car_id"] for m in messages[:50])


class CountingSink(CsvSink):
    def __init__(self) -> None:  # no file: counts only
        self.sent = self.errors = self.submitted = 0

    def send(self, batch, start=0, stop=None) -> None:  # type: ignore[no-untyped-def]
        self.submitted += (len(batch) if stop is None else stop) - start

    def close(self, timeout: float = 60) -> None:
        pass


def test_time_lapse_spreads_cars_evenly_over_each_interval() -> None:
    """10 s readings at time-lapse 10: one step per wall second, half the fleet per 0.5 s.
    The pacing waits are recorded, not slept."""
    waits: list[float] = []

    def record(seconds: float) -> bool:
        if seconds > 0:
            waits.append(seconds)
        return False

    simulator = FleetSimulator(SimulationConfig(cars=10, interval_ms=10_000))
    sink = CountingSink()
    sent = run_simulation(simulator, 3, sink, time_lapse=10, chunk=5, stop_requested=record)
    assert sent == sink.submitted == 30
    assert len(waits) == 5  # every chunk but the first is due later
    assert waits == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5], abs=0.2)


def test_a_stop_request_ends_the_run_early() -> None:
    simulator = FleetSimulator(SimulationConfig(cars=10))
    sent = run_simulation(simulator, 100, CountingSink(), chunk=5, stop_requested=lambda _s: True)
    assert sent == 5
