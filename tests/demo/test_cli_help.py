"""`fleet demo` and `fleet bench` as commands: help, and bad arguments as one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fleet.cli import main
from fleet.cli.bench import run_all_script


@pytest.mark.parametrize("command", ["demo", "bench", "run"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert f"Usage: fleet {command}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["demo", "--cars", "0"], "--cars"),
        (["demo", "--cars", "100001"], "--cars"),
        (["demo", "--train-after", "0"], "--train-after"),
    ],
)
def test_bad_demo_options(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert len(err.strip().splitlines()) == 1


def test_bench_names_an_unknown_benchmark() -> None:
    script = run_all_script()
    assert script.is_file()
    result = subprocess.run(
        [sys.executable, str(script), "--only", "lake,nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown benchmark nope" in result.stderr
