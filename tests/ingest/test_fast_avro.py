"""The bulk encoder of simulated steps is byte-identical to fastavro through the codec."""

from __future__ import annotations

from fleet.avro import telemetry_codec
from ingest.fast_avro import BatchEncoder
from ingest.simulator import FleetSimulator, SimulationConfig


def test_bulk_encoding_equals_the_codec_for_every_car_and_step() -> None:
    codec = telemetry_codec()
    encoder = BatchEncoder(codec)
    # A high failure rate, so label combinations of many kinds appear.
    simulator = FleetSimulator(SimulationConfig(cars=300, profile="seed", failure_rate=20, seed=7))
    checked = 0
    for batch in simulator.run(12):
        fast = encoder.encode(batch)
        assert fast == codec.encode_many(batch.records())
        checked += len(fast)
    assert checked == 3600
    decoded = codec.decode(fast[0])
    assert decoded["car_id"] == "car1"
    assert decoded["seq"] == 11
