"""`fleet bench`: run the benchmarks in bench/ and write one report (bench/run_all.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.context import CliError

bench_app = typer.Typer()


def run_all_script() -> Path:
    """bench/run_all.py of the source checkout this package is installed from."""
    import fleet

    return Path(fleet.__file__).resolve().parent.parent / "bench" / "run_all.py"


@bench_app.command("bench")
def bench(
    only: Annotated[
        str | None,
        typer.Option(
            help="comma-separated subset: ingest, lake, twin, ml_score, ml_ingest, ml_evaluate, "
            "ui, peer, twin_live, twin_write, e2e, demo"
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="scaled down, a smoke run (committed results are kept)")
    ] = False,
    report_only: Annotated[
        bool, typer.Option(help="no runs: the report from the current results files")
    ] = False,
) -> None:
    """Run every benchmark (or --only some), then write bench/results/report.md and .json:
    each figure, its goal, met or missed, and the machine it ran on."""
    script = run_all_script()
    if not script.is_file():
        raise CliError(f"{script} not found: `fleet bench` runs from a source checkout")
    args = [sys.executable, str(script)]
    if only:
        args += ["--only", only]
    if quick:
        args.append("--quick")
    if report_only:
        args.append("--report-only")
    code = subprocess.run(args, cwd=script.parent.parent, check=False).returncode
    if code:
        raise typer.Exit(code)
