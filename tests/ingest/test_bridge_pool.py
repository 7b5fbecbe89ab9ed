"""`fleet bridge --processes 2` with the bulk publisher: the load is split, a child killed with
-9 is started again, and every PUBACKed reading reaches Kafka with the model's values."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import pytest
from paho.mqtt.client import CallbackAPIVersion

from fleet.avro import telemetry_codec
from fleet.contract import SENSORS
from fleet.settings import Settings
from fleet.waiting import wait_for
from ingest.outputs import BulkMqttSink
from ingest.simulator import FleetSimulator, SimulationConfig
from tests.ingest.helpers import TopicReader
from tests.ingest.test_bridge import FLEET, bridge_env, free_port, scrape

pytestmark = pytest.mark.integration


def two_free_ports() -> int:
    """A port p such that p and p + 1 are free (the pool's metrics ports)."""
    for _ in range(100):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind(("127.0.0.1", port + 1))
            return port
    raise RuntimeError("no two free ports in a row")


def kill_one_child(pool: subprocess.Popen[bytes]) -> None:
    children = psutil.Process(pool.pid).children()
    assert len(children) == 2
    victim = children[0]
    victim.send_signal(signal.SIGKILL)
    wait_for(lambda: not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE, 10, "kill")


def keys_in(reader: TopicReader) -> set[tuple[str, int]]:
    codec = telemetry_codec()
    return {(r["car_id"], r["seq"]) for r in (codec.decode(m.value()) for m in reader.poll())}


def publish_killing_one(
    settings: Settings, pool: subprocess.Popen[bytes], reader: TopicReader, steps: int
) -> dict[tuple[str, int], dict[str, Any]]:
    """Publish ``steps`` steps of 500 cars with the bulk sink; kill -9 one bridge midway.
    Returns the records that were PUBACKed (all of them, asserted)."""
    simulator = FleetSimulator(SimulationConfig(cars=500, seed=11, profile="seed", failure_rate=5))
    sink = BulkMqttSink(settings, connections=2)
    wanted: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        for step in range(steps):
            batch = simulator.step()
            wanted |= {(r["car_id"], r["seq"]): r for r in batch.records()}
            for start in range(0, 500, 100):
                sink.send(batch, start, start + 100)
            if step == steps // 2:
                wait_for(lambda: len(reader.poll()) > 200, 60, "readings to flow")
                kill_one_child(pool)
    finally:
        sink.close(60)
    assert sink.errors == 0
    assert bytes(sink.status) == b"\x01" * len(wanted)  # every reading PUBACKed
    return wanted


def test_two_bridge_processes_split_the_load_and_survive_a_kill_9_without_loss(
    fresh_settings: Settings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    port = two_free_ports()
    env = bridge_env(stack_env, fresh_settings, f"pool-{uuid.uuid4().hex[:6]}")
    log_path = tmp_path / "pool.log"
    log = log_path.open("w")
    pool = subprocess.Popen(
        [FLEET, "bridge", "--processes=2", f"--metrics-port={port}"],
        env=env,
        stdout=log,
        stderr=log,
    )
    reader = TopicReader(fresh_settings, fresh_settings.topics.telemetry)
    try:
        wait_for(lambda: log_path.read_text().count("mqtt connected") >= 2, 60, "both bridges up")
        wanted = publish_killing_one(fresh_settings, pool, reader, steps=6)
        wait_for(lambda: set(wanted) <= keys_in(reader), 120, "all in Kafka", interval=0.5)

        def settled() -> list[dict[str, float]] | None:
            metrics = [scrape(port), scrape(port + 1)]
            return metrics if all(m["fleet_bridge_in_flight"] == 0 for m in metrics) else None

        metrics = wait_for(settled, 60, "both processes to settle")
        # The restarted process runs again, both took part of the load, and counts reconcile.
        for m in metrics:
            assert m["fleet_bridge_received_total"] > 0
            assert m["fleet_bridge_received_total"] == m["fleet_bridge_produced_total"]
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(60) == 0
    finally:
        if pool.poll() is None:
            for child in psutil.Process(pool.pid).children():
                child.kill()
            pool.kill()
        reader.close()
        log.close()
    codec = telemetry_codec()
    for record in (codec.decode(m.value()) for m in reader.messages):
        expected = wanted[(record["car_id"], record["seq"])]
        assert record["event_time"] == expected["event_time"]
        assert record["failure_modes"] == expected["failure_modes"]
        values = [record[n] for n in SENSORS]
        assert values == pytest.approx([expected[n] for n in SENSORS], rel=1e-6)
    text = log_path.read_text()
    assert "bridge process exited; starting it again" in text
    assert text.count("bridge stopped") == 2  # both stopped cleanly at the end


def test_an_anonymous_client_is_refused(fresh_settings: Settings) -> None:
    reasons: list[Any] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"anon-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
    )
    client.on_connect = lambda _c, _u, _f, reason, _p: reasons.append(reason)
    client.connect(fresh_settings.mqtt_host, fresh_settings.mqtt.port)
    client.loop_start()
    try:
        wait_for(lambda: reasons, 10, "the broker's answer")
    finally:
        client.loop_stop()
        client.disconnect()
    assert reasons[0].is_failure
    assert "authori" in str(reasons[0]).lower() or "password" in str(reasons[0]).lower()
