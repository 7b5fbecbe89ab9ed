"""Run every benchmark, then write one report: bench/results/report.md and report.json.

    .venv/bin/fleet bench                       # all of them, full size (an hour or more)
    .venv/bin/fleet bench --only lake,ml_score  # a subset
    .venv/bin/fleet bench --quick               # scaled down: a smoke run of every benchmark
    .venv/bin/fleet bench --report-only         # just the report, from the results files

Each benchmark runs as its own process (`python bench/<file>.py ...`, starting its own stack
on free ports unless FLEET_* settings name one) and writes its figures to bench/results/;
the report reads those files. The load average is recorded before and after each run: on a
machine shared with other work the figures say less, and the report shows it.

A quick run is for checking that the benchmarks work, not for figures: its results would
overwrite the full-size ones, so the results files are restored afterwards and the quick
figures go to report-quick.md/json only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import report  # noqa: E402


@dataclass(frozen=True)
class Bench:
    script: str
    full: tuple[str, ...] = ()  # the benchmark's own defaults are its full size
    quick: tuple[str, ...] = ()


BENCHES: dict[str, Bench] = {
    "ingest": Bench(
        "ingest_bench.py", quick=("--cars", "10000", "--direct-steps", "3", "--mqtt-seconds", "10")
    ),
    "lake": Bench("lake_archive.py", quick=("--size", "50000")),
    "twin": Bench(
        "twin_projector.py",
        quick=(
            "--cars",
            "500",
            "--readings",
            "4",
            "--batch",
            "2000",
            "--baseline-events",
            "1000",
            "--memory-cars",
            "500,1000",
        ),
    ),
    "ml_score": Bench("ml_score.py", quick=("--size", "10000", "--batch", "5000")),
    "ml_ingest": Bench("ml_ingest.py", quick=("--size", "10000")),
    "ml_evaluate": Bench(
        "ml_evaluate.py",
        quick=(
            "--train-cars",
            "100",
            "--train-hours",
            "2",
            "--eval-cars",
            "100",
            "--eval-hours",
            "1",
            "--slice-cars",
            "100",
            "--calibration-cars",
            "100",
            "--calibration-hours",
            "1",
            "--epochs",
            "1",
            "--supervised-epochs",
            "1",
            "--epoch-size",
            "50000",
        ),
    ),
    "ui": Bench("ui_render.py", quick=("--size", "1000", "--runs", "1")),
    # Our projector beside Quix Streams (installed on first run into its own venv).
    "peer": Bench("peer.py", quick=("--quick",)),
    # The projector in the live regime; how a twin is written; the whole platform over MQTT;
    # the projector's lag during a default `fleet demo`.
    "twin_live": Bench(
        "twin_live.py", quick=("--cars", "2000", "--rates", "200", "--seconds", "10")
    ),
    "twin_write": Bench("twin_write.py", quick=("--twins", "200", "--rounds", "2")),
    "e2e": Bench("e2e.py", quick=("--cars", "2000", "--rates", "200", "--seconds", "20")),
    "demo": Bench("demo_lag.py", quick=("--minutes", "1")),
}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_one(name: str, bench: Bench, quick: bool, logs: Path) -> dict[str, Any]:
    args = bench.quick if quick else bench.full
    command = [sys.executable, str(HERE / bench.script), *args]
    shown = " ".join(["python", f"bench/{bench.script}", *args])
    log_file = logs / f"{name}.log"
    print(f"== {name}: {shown} (log: {log_file})", flush=True)
    before = load()
    started = time.monotonic()
    with log_file.open("wb") as log:
        code = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parent, check=False
        ).returncode
    seconds = time.monotonic() - started
    after = load()
    print(f"   exit {code} after {seconds:.0f}s; load {before} -> {after}", flush=True)
    return {
        "name": name,
        "command": shown,
        "exit_code": code,
        "seconds": seconds,
        "load_before": before,
        "load_after": after,
        "log": str(log_file),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="scaled down (a smoke run)")
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from the results files"
    )
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [n for n in chosen if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")

    load_before = tuple(load())
    runs: list[dict[str, Any]] = []
    saved: Path | None = None
    results_folder = report.RESULTS
    if not args.report_only:
        results_folder.mkdir(exist_ok=True)
        logs = Path(tempfile.mkdtemp(prefix="fleet-bench-logs-"))
        if args.quick:  # keep the full-size results: a quick run must not replace them
            saved = Path(tempfile.mkdtemp(prefix="fleet-bench-results-"))
            shutil.copytree(results_folder, saved, dirs_exist_ok=True)
        try:
            for name in chosen:
                runs.append(run_one(name, BENCHES[name], args.quick, logs))
            quick_results = report.load_results(results_folder)
        finally:
            if saved is not None:
                shutil.rmtree(results_folder)
                shutil.copytree(saved, results_folder)
                shutil.rmtree(saved)
    if args.quick and not args.report_only:
        built = report.build(quick_results, runs, load_before, mode="quick run, scaled down")
        path = report.write(built, results_folder, "report-quick")
    else:
        mode = "benchmarks run now" if runs else "from the results files as committed"
        if runs and len(runs) < len(BENCHES):
            mode = f"run now: {', '.join(chosen)}; the rest from the results files"
        built = report.build(report.load_results(results_folder), runs, load_before, mode)
        path = report.write(built, results_folder)
    print(path.read_text())
    failed = [r["name"] for r in runs if r["exit_code"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)} (see their logs above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
