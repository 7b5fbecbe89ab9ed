"""`fleet run SERVICE`: the table of services, and a real service stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.cli import main
from fleet.cli.run import SERVICES
from fleet.settings import Settings
from fleet.waiting import wait_for

FLEET = str(Path(sys.executable).parent / "fleet")


def test_help_lists_every_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for name, spec in SERVICES.items():
        assert name in out
        assert f"fleet {' '.join(spec.command)}" in out


def test_every_service_is_a_real_command(capsys: pytest.CaptureFixture[str]) -> None:
    for spec in SERVICES.values():
        assert main([*spec.command, "--help"]) == 0, spec
    capsys.readouterr()


def test_an_unknown_service_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown service 'nope'" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.integration
@pytest.mark.parametrize("service", ["twin", "lake"])
def test_a_service_runs_until_sigterm_and_exits_0(
    service: str, fresh_settings: Settings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = (
        os.environ
        | stack_env
        | {
            "FLEET_LOG_FORMAT": "json",
            "FLEET_TOPICS_TELEMETRY": fresh_settings.topics.telemetry,
            "FLEET_TOPICS_ANOMALIES": fresh_settings.topics.anomalies,
            "FLEET_GROUPS_TWIN": fresh_settings.groups.twin,
            "FLEET_GROUPS_LAKE": fresh_settings.groups.lake,
            "FLEET_MONGODB_DATABASE": fresh_settings.mongodb.database,
        }
    )
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([FLEET, "run", service], stdout=out, stderr=out, env=env)
    try:
        wait_for(lambda: '"assigned"' in log.read_text(), 90, f"{service} to get partitions")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert '"stopped"' in log.read_text()
