"""`fleet stack up | status | down` as a user runs them: a second stack on its own ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from fleet.settings import Settings
from fleet.stack import rust_server
from tests.conftest import stack_environment

pytestmark = pytest.mark.integration
FLEET = str(Path(sys.executable).parent / "fleet")


def fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLEET, *args], capture_output=True, text=True, env=env, check=False, timeout=300
    )


def test_up_twice_status_healthy_down_leaves_nothing(tmp_path: Path) -> None:
    env = os.environ | stack_environment(tmp_path / "stack")
    first = fleet(env, "stack", "up")
    assert first.returncode == 0, first.stderr
    try:
        status = fleet(env, "stack", "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        services = json.loads(status.stdout)
        assert {s["name"]: (s["state"], s["healthy"]) for s in services} == {
            name: ("running", True) for name in ("kafka", "mongodb", "mosquitto", "gcs")
        }
        # The Rust server whenever `fleet stack install` (make setup) could build it.
        built = rust_server.built_program(Settings().stack.cache) is not None
        assert {s["name"]: s["server"] for s in services} == {
            "kafka": "kafka 4.4.0",
            "mongodb": "secantusd-rs" if built else "secantusd-py",
            "mosquitto": "mosquitto",
            "gcs": "fake-gcs-server",
        }
        pids = {s["pid"] for s in services}

        second = fleet(env, "stack", "up")
        assert second.returncode == 0, second.stderr
        assert second.stderr.count("already running") == 4
        again = {s["pid"] for s in json.loads(fleet(env, "stack", "status", "--json").stdout)}
        assert again == pids  # nothing was restarted or duplicated
    finally:
        down = fleet(env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )
    stopped = fleet(env, "stack", "status", "--json")
    assert stopped.returncode == 3
    assert {s["state"] for s in json.loads(stopped.stdout)} == {"stopped"}
    logs = fleet(env, "stack", "logs", "kafka", "-n", "200")
    assert "Kafka Server started" in logs.stdout
