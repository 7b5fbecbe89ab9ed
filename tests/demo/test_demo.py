"""`fleet demo` as a user runs it: a real subprocess on a private stack of its own, checked
through the servers (twins, lake, registry, scores, explorer), then Ctrl-C and nothing left.

About 3 minutes on a quiet 2-core machine; the deadlines are generous because training and
scoring slow down a lot when the machine is shared."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from fleet import clients
from fleet.settings import Settings
from fleet.stack import Stack
from fleet.stack.ports import free_port
from fleet.waiting import wait_for
from tests.conftest import stack_environment

pytestmark = pytest.mark.integration
FLEET = str(Path(sys.executable).parent / "fleet")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def test_demo_runs_the_platform_and_ctrl_c_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = stack_environment(tmp_path / "stack") | {
        "FLEET_UI_PORT": str(free_port()),
        "FLEET_LAKE_FLUSH_SECONDS": "2",  # objects soon, not after a minute
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    output = tmp_path / "demo.out"
    with output.open("wb") as out:
        demo = subprocess.Popen(
            [
                FLEET,
                "demo",
                "--cars",
                "20",
                "--interval",
                "1",
                "--time-lapse",
                "5",
                "--steps",  # 3,000 readings, then the fleet parks (less load meanwhile)
                "150",
                "--train-after",
                "1500",
                "--epochs",
                "1",
                "--eval-cars",
                "20",
                "--stop-timeout",
                "20",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | env,
        )
    descendants: set[int] = set()

    def watched(check: Any) -> Any:
        """``check``, noting the demo's children on the way (to prove they are gone later)."""

        def condition() -> Any:
            if demo.poll() is not None:
                raise AssertionError(f"demo exited {demo.returncode}:\n{output.read_text()}")
            descendants.update(p.pid for p in psutil.Process(demo.pid).children(recursive=True))
            return check()

        return condition

    mongo = clients.mongo_client(settings, serverSelectionTimeoutMS=2000)
    twins = mongo[settings.mongodb.database][settings.twin.collection]
    try:
        wait_for(watched(lambda: twins.count_documents({}) >= 20), 150, "20 twins in MongoDB")
        bucket = clients.gcs_bucket(settings)
        wait_for(
            watched(lambda: any(True for _ in bucket.list_blobs(prefix="telemetry/v1/"))),
            60,
            "telemetry objects in the lake",
        )
        from ml import registry

        models = wait_for(
            watched(lambda: registry.list_models(settings)), 420, "a model in the registry"
        )
        version = models[0]["version"]
        wait_for(
            watched(lambda: twins.count_documents({"anomaly.model_version": version}) > 0),
            240,
            f"twins scored by the promoted model {version}",
        )
        url = f"http://127.0.0.1:{env['FLEET_UI_PORT']}/"
        assert wait_for(watched(lambda: _http_status(url) == 200), 60, "the explorer")
        wait_for(
            watched(lambda: f"the fleet explorer is at {url.rstrip('/')}" in output.read_text()),
            30,
            "the explorer's URL on the console",
        )
        names = {" ".join(psutil.Process(p).cmdline()[-2:]) for p in descendants if _alive(p)}
        services = ("bridge", "twin", "history", "lake", "scorer", "commands")
        for service in (f"run {name}" for name in services):
            assert service in names, names

        demo.send_signal(signal.SIGINT)
        assert demo.wait(120) == 0, output.read_text()
    finally:
        mongo.close()
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)
            Stack(settings).down()
    text = output.read_text()
    assert "every service stopped cleanly" in text, text
    left = [pid for pid in descendants if _alive(pid)]
    assert not left, [psutil.Process(p).cmdline() for p in left]
    # The demo started the stack, so it stopped it: no server answers any more.
    statuses = Stack(settings).status()
    assert {s.name: s.state for s in statuses} == {
        name: "stopped" for name in ("kafka", "mongodb", "mosquitto", "gcs")
    }
