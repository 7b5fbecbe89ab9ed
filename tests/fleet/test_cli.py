"""The `fleet` command: help on every level, one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleet.cli import main

FLEET = str(Path(sys.executable).parent / "fleet")


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("stack", "topics", "config"):
        assert command in out


@pytest.mark.parametrize(
    "path", [["stack"], ["topics"], ["config"], ["stack", "up"], ["stack", "logs"]]
)
def test_every_subcommand_has_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    assert "Usage: fleet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--nope"], "No such option: --nope"),
        (["stack", "bogus"], "No such command 'bogus'"),
        (["stack", "up", "zookeeper"], "unknown service zookeeper"),
        (["stack", "logs"], "Missing argument"),
        (["stack", "logs", "kafka", "-n", "0"], "-n"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert "Traceback" not in err


def test_bad_setting_is_one_line_from_the_installed_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [FLEET, "config", "show"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        env={"PATH": "/usr/bin:/bin", "FLEET_KAFKA_PORT": "ninety"},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "fleet: error: setting kafka.port: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_config_show_prints_effective_settings_without_secrets(tmp_path: Path) -> None:
    result = subprocess.run(
        [FLEET, "config", "show"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "FLEET_MQTT_PASSWORD": "hunter2",
            "FLEET_MONGODB_PORT": "27999",
        },
    )
    assert '"mongodb_uri": "mongodb://127.0.0.1:27999/"' in result.stdout
    assert "hunter2" not in result.stdout


def test_missing_prerequisite_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    result = subprocess.run(
        [FLEET, "stack", "up", "kafka"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        env={
            "PATH": str(tmp_path),
            "FLEET_STACK_HOME": str(tmp_path / "stack"),
            "FLEET_STACK_CACHE": str(tmp_path / "cache"),
        },
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "fleet: error: Kafka needs Java 17+: install it with "
        "`apt-get install openjdk-17-jre-headless`"
    )
