"""One benchmark report from the results files every bench/*.py writes.

Each figure is read from a results JSON (never from a benchmark's printed output) by a path of
keys; a missing file or key shows as "not measured", so a benchmark that changed its keys or
did not run never breaks the report. Each figure has its goal (from the issues; where the
results file states its own goal, that one wins) and a verdict: met, missed, not measured, or
"-" for figures reported without a goal.

    .venv/bin/python bench/report.py        # report.md + report.json from bench/results/
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

Results = dict[str, Any]  # results file stem -> its parsed JSON


def at(data: Any, *path: str | int) -> Any:
    """``data[path[0]][path[1]]...``, or None when any step is missing."""
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Spec:
    """How to find one figure and judge it."""

    area: str
    label: str
    source: str  # results file stem, e.g. "ingest" for bench/results/ingest.json
    get: Callable[[Any], Any]  # the results file's data -> the figure (or None)
    unit: str = ""
    goal: float | None = None
    better: str = "higher"  # higher | lower
    goal_from: Callable[[Any], Any] | None = None  # the file's own goal, when it states one
    goal_note: str = ""
    note: Callable[[Any], str] | None = None


@dataclass
class Figure:
    area: str
    label: str
    value: float | None
    unit: str
    goal: str
    status: str  # met | missed | not measured | -
    source: str
    note: str = ""


def judge(value: float | None, goal: float | None, better: str) -> str:
    if value is None:
        return "not measured"
    if goal is None:
        return "-"
    ok = value >= goal if better == "higher" else value <= goal
    return "met" if ok else "missed"


def goal_text(goal: float | None, better: str, unit: str, note: str) -> str:
    if goal is None:
        return note or "-"
    sign = ">=" if better == "higher" else "<="
    text = f"{sign} {fmt(goal)}{' ' + unit if unit else ''}"
    return f"{text} ({note})" if note else text


def fmt(value: float | None) -> str:
    if value is None:
        return "not measured"
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.3f}"


# --- figures whose value takes a little computing ---


#: The evaluation's fleets (bench/ml_evaluate.py): (a) like the training fleet, (b) shifted.
FLEET_A, FLEET_B = "(a) default fleet", "(b) shifted fleet"


def _recalls(ml: Any, fleet: str) -> dict[str, float]:
    """Each failure mode's recall within 5 simulated minutes of its onset, on ``fleet``."""
    kinds = at(ml, "evaluation", "alarms", fleet, "per_kind")
    if not isinstance(kinds, dict):
        return {}
    found = {k: number(at(v, "within_5_min", "recall")) for k, v in kinds.items()}
    return {k: v for k, v in found.items() if v is not None}


def worst_mode_recall(fleet: str) -> Callable[[Any], float | None]:
    def get(ml: Any) -> float | None:
        recalls = _recalls(ml, fleet)
        return min(recalls.values()) if recalls else None

    return get


def worst_mode_name(fleet: str) -> Callable[[Any], str]:
    def note(ml: Any) -> str:
        recalls = _recalls(ml, fleet)
        return f"weakest: {min(recalls, key=lambda k: recalls[k])}" if recalls else ""

    return note


def memory_runs(twin: Any) -> list[tuple[int, float]]:
    """(cars, peak RSS MB) of the projector's memory runs with equal batches (else any)."""
    for key in ("memory_same_events", "memory"):
        runs = at(twin, key)
        if isinstance(runs, list):
            found = [
                (int(r["cars"]), float(r["peak_rss_mb"]))
                for r in runs
                if isinstance(r, dict)
                and number(r.get("cars")) is not None
                and number(r.get("peak_rss_mb")) is not None
            ]
            if len(found) >= 2:
                return sorted(found)
    return []


def memory_growth(twin: Any) -> float | None:
    runs = memory_runs(twin)
    if not runs or runs[-1][0] < 100_000:
        return None  # the goal is about 100,000 cars: a smaller range does not answer it
    return runs[-1][1] / runs[0][1]


def memory_note(twin: Any) -> str:
    runs = memory_runs(twin)
    if not runs:
        return ""
    shown = ", ".join(f"{c:,} cars {mb:.0f} MB" for c, mb in runs)
    return shown + ("" if runs[-1][0] >= 100_000 else " (not measured at 100,000 cars)")


def page_seconds(name: str) -> Callable[[Any], float | None]:
    def get(ui: Any) -> float | None:
        for page in at(ui, "pages") or []:
            if isinstance(page, dict) and page.get("page") == name:
                return number(page.get("cold_median_s"))
        return None

    return get


def scan_rate(name: str) -> Callable[[Any], float | None]:
    return lambda lake: number(at(lake, "scan_rows_per_s", name))


UI_GOAL_S = 2.0

SPECS: list[Spec] = [
    # ingest (#3)
    Spec(
        "ingest",
        "simulator -> Kafka direct, 100,000 cars",
        "ingest",
        lambda d: at(d, "kafka_direct", "events_per_s"),
        "events/s",
        200_000,
        goal_from=lambda d: at(d, "kafka_direct", "goal_events_per_s"),
    ),
    Spec(
        "ingest",
        "simulator -> MQTT -> bridge -> Kafka, QoS 1, sustained",
        "ingest",
        lambda d: at(d, "mqtt_bridge_kafka", "sustained_msg_per_s"),
        "msg/s",
        10_000,
        goal_from=lambda d: at(d, "mqtt_bridge_kafka", "goal_msg_per_s"),
        goal_note="100,000 cars, one reading per 10 s",
        note=lambda d: (
            f"{fmt(number(at(d, 'mqtt_bridge_kafka', 'cars')))} cars, "
            f"{at(d, 'mqtt_bridge_kafka', 'bridges') or '?'} bridge(s), offered "
            f"{fmt(number(at(d, 'mqtt_bridge_kafka', 'offered_msg_per_s')))} msg/s"
        ),
    ),
    Spec(
        "ingest",
        "PUBACKed readings lost (MQTT path)",
        "ingest",
        lambda d: at(d, "mqtt_bridge_kafka", "lost_pubacked"),
        "readings",
        0,
        better="lower",
        note=lambda d: f"of {fmt(number(at(d, 'mqtt_bridge_kafka', 'pubacked')))} PUBACKed",
    ),
    Spec(
        "ingest",
        "publish -> Kafka latency p99 (MQTT path)",
        "ingest",
        lambda d: at(d, "mqtt_bridge_kafka", "latency_p99_ms"),
        "ms",
        note=lambda d: f"p50 {fmt(number(at(d, 'mqtt_bridge_kafka', 'latency_p50_ms')))} ms",
    ),
    # twin (#4)
    Spec(
        "twin",
        "projector / one replace-upsert per event, 10,000 cars",
        "twin",
        lambda d: at(d, "ratio"),
        "x",
        10,
        note=lambda d: (
            f"{fmt(number(at(d, 'projector', 'events_per_s')))} vs "
            f"{fmt(number(at(d, 'baseline', 'events_per_s')))} events/s"
        ),
    ),
    Spec(
        "twin",
        "projector / a real peer (Quix Streams + MongoDBSink), backlog, same server",
        "peer",
        lambda d: at(d, "backlog", "ratio_changes_on"),
        "x",
        10,
        goal_from=lambda d: at(d, "goal_ratio"),
        note=lambda d: (
            f"{fmt(number(at(d, 'backlog', 'ours_changes_on', 'events_per_s')))} vs "
            f"{fmt(number(at(d, 'backlog', 'peer', 'events_per_s')))} events/s on "
            f"{at(d, 'mongodb_server')}; {fmt(number(at(d, 'backlog', 'ratio_changes_off')))}x "
            "without change events"
        ),
    ),
    Spec(
        "twin",
        "live freshness p99, ours (peer in the note), first live phase",
        "peer",
        lambda d: at(d, "live", "phases", 0, "ours", "p99_s"),
        "s",
        note=lambda d: (
            f"{fmt(number(at(d, 'live', 'phases', 0, 'rate')))} readings/s; peer p99 "
            f"{fmt(number(at(d, 'live', 'phases', 0, 'peer', 'p99_s')))} s; p50 ours / peer "
            f"{fmt(number(at(d, 'live', 'phases', 0, 'ours', 'p50_s')))} / "
            f"{fmt(number(at(d, 'live', 'phases', 0, 'peer', 'p50_s')))} s"
        ),
    ),
    Spec(
        "twin",
        "projector throughput",
        "twin",
        lambda d: at(d, "projector", "events_per_s"),
        "events/s",
    ),
    Spec(
        "twin",
        "projector decode + fold CPU per event, reference / fast path, 1,000 cars",
        "twin-fold",
        lambda d: at(d, "runs", -1, "ratio"),
        "x",
        note=lambda d: (
            f"{fmt(number(at(d, 'runs', -1, 'reference_us_per_event')))} vs "
            f"{fmt(number(at(d, 'runs', -1, 'fast_us_per_event')))} µs per event at "
            f"{fmt(number(at(d, 'runs', -1, 'events_per_car')))} events per car; "
            f"{fmt(number(at(d, 'runs', 0, 'reference_us_per_event')))} vs "
            f"{fmt(number(at(d, 'runs', 0, 'fast_us_per_event')))} at "
            f"{fmt(number(at(d, 'runs', 0, 'events_per_car')))}; same twins"
        ),
    ),
    Spec(
        "twin",
        "projector peak RSS, largest / smallest fleet",
        "twin",
        memory_growth,
        "x",
        1.25,
        better="lower",
        goal_note="flat from 1,000 to 100,000 cars",
        note=memory_note,
    ),
    # lake (#5)
    Spec(
        "lake",
        "archive Kafka -> Avro objects, 1M events",
        "lake",
        lambda d: at(d, "archive_events_per_s"),
        "events/s",
        100_000,
        goal_from=lambda d: at(d, "goals", "archive_events_per_s"),
    ),
    Spec(
        "lake",
        "scan into a DataFrame (polars)",
        "lake",
        scan_rate("polars, all columns"),
        "rows/s",
        1_000_000,
        goal_from=lambda d: at(d, "goals", "scan_rows_per_s"),
    ),
    Spec(
        "lake",
        "scan into a DataFrame (pandas)",
        "lake",
        scan_rate("pandas, all columns"),
        "rows/s",
        note=lambda d: "for comparison: the goal is held by the polars reader",
    ),
    # ml (#6)
    Spec(
        "ml",
        "scoring Kafka -> Kafka, one process",
        "ml",
        lambda d: at(d, "scoring", "kafka_to_kafka_events_per_s"),
        "events/s",
        50_000,
        goal_from=lambda d: at(d, "scoring", "goal_events_per_s"),
    ),
    Spec(
        "ml",
        "reading in Kafka -> score on the twin, p99 at 10,000 events/s, 1,000 cars",
        "ml",
        lambda d: (
            at(d, "latency", "p99_s")
            or at(d, "scoring", "latency_p99_s")
            or at(d, "end_to_end", "p99_s")
        ),
        "s",
        2.0,
        better="lower",
    ),
    Spec(
        "ml",
        "reading in Kafka -> score on the twin, p99 at 10,000 events/s, 100 cars",
        "ml",
        lambda d: at(d, "latency_100_cars_10000_per_s", "p99_s"),
        "s",
        2.0,
        better="lower",
        note=lambda d: f"p50 {fmt(number(at(d, 'latency_100_cars_10000_per_s', 'p50_s')))} s",
    ),
    Spec(
        "ml",
        "false alarms per 1,000 car-hours, default fleet the model never saw (a)",
        "ml",
        lambda d: at(d, "evaluation", "alarms", FLEET_A, "false_alarms_per_1000_car_hours"),
        "",
        1.0,
        better="lower",
        note=lambda d: f"calibrated threshold {fmt(number(at(d, 'evaluation', 'threshold')))}",
    ),
    Spec(
        "ml",
        "alarm precision, fleet (a)",
        "ml",
        lambda d: at(d, "evaluation", "alarms", FLEET_A, "alarm_precision"),
        "",
        0.9,
    ),
    Spec(
        "ml",
        "worst failure-mode recall within 5 simulated minutes of onset, fleet (a)",
        "ml",
        worst_mode_recall(FLEET_A),
        "",
        0.95,
        note=worst_mode_name(FLEET_A),
    ),
    Spec(
        "ml",
        "false alarms per 1,000 car-hours, shifted fleet (b)",
        "ml",
        lambda d: at(d, "evaluation", "alarms", FLEET_B, "false_alarms_per_1000_car_hours"),
        "",
        1.0,
        better="lower",
    ),
    Spec(
        "ml",
        "per-reading ROC-AUC, fleet (a) (secondary)",
        "ml",
        lambda d: at(d, "evaluation", "alarms", FLEET_A, "reading_roc_auc"),
        "",
        0.95,
    ),
    Spec(
        "ml",
        "training epoch, 1M readings (batch 1024)",
        "ml",
        lambda d: at(d, "training_epoch", "batch_1024", "seconds"),
        "s",
    ),
    Spec(
        "ml",
        "tensorflow-io ingestion / local Avro file",
        "ml",
        lambda d: at(d, "ingestion", "ratio_tfio_plus_decode_to_file"),
        "x",
        note=lambda d: (
            f"{fmt(number(at(d, 'ingestion', 'tfio_plus_decode_records_per_s')))} vs "
            f"{fmt(number(at(d, 'ingestion', 'avro_file_records_per_s')))} records/s"
        ),
    ),
    # ui (#7): the issue asks for "fast"; 2 s is the goal this report holds it to.
    *(
        Spec(
            "ui",
            f"explorer {page}, 100,000 twins (cold median)",
            "ui",
            page_seconds(page),
            "s",
            UI_GOAL_S,
            better="lower",
            goal_note="'fast'",
        )
        for page in (
            "overview",
            "table: cars needing attention",
            "table: firmware 1000",
            "table: anomalous by score, next page (keyset)",
            "car detail",
            "anomalies",
            "fleet table (all cars by id)",
        )
    ),
]


def _safely(get: Callable[[Any], Any] | None, data: Any) -> Any:
    """``get(data)``, or None: a results file whose shape changed must not break the report."""
    if get is None or data is None:
        return None
    try:
        return get(data)
    except Exception:
        return None


def figures(results: Results, specs: list[Spec] = SPECS) -> list[Figure]:
    out = []
    for spec in specs:
        data = results.get(spec.source)
        value = number(_safely(spec.get, data))
        stated = number(_safely(spec.goal_from, data))
        goal = stated if stated is not None else spec.goal
        note = str(_safely(spec.note, data) or "")
        out.append(
            Figure(
                spec.area,
                spec.label,
                value,
                spec.unit,
                goal_text(goal, spec.better, spec.unit, spec.goal_note),
                judge(value, goal, spec.better),
                f"{spec.source}.json",
                note,
            )
        )
    return out


def load_results(folder: Path = RESULTS) -> Results:
    """Every results JSON in ``folder`` by stem; an unreadable file is left out."""
    results: Results = {}
    for path in sorted(folder.glob("*.json")):
        if path.stem.startswith("report"):
            continue
        try:
            results[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return results


def source_notes(results: Results, folder: Path = RESULTS) -> list[dict[str, str]]:
    """Per results file: when and where its benchmark says it ran, in its own words."""
    notes = []
    for stem, data in sorted(results.items()):
        if not isinstance(data, dict):
            continue
        when = data.get("date") or data.get("when") or git_date(folder / f"{stem}.json")
        machine = data.get("machine")
        if isinstance(machine, dict):
            machine = ", ".join(f"{k} {v}" for k, v in machine.items())
        notes.append(
            {
                "file": f"{stem}.json",
                "measured": str(when or "?"),
                "machine": str(machine or "-"),
                "caveat": str(data.get("caveat") or ""),
            }
        )
    return notes


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=HERE, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_date(path: Path) -> str:
    """When ``path`` was last committed (the benchmark's run is at or before that)."""
    date = git("log", "-1", "--format=%cI", "--", str(path))
    return f"committed {date}" if date else ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(load_before: tuple[float, ...] | None = None) -> dict[str, Any]:
    """The machine this report is made on (and, when benchmarks ran, the load around them)."""
    import psutil

    commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_before": list(load_before) if load_before else None,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def build(
    results: Results,
    runs: list[dict[str, Any]] | None = None,
    load_before: tuple[float, ...] | None = None,
    mode: str = "from results files",
) -> dict[str, Any]:
    found = figures(results)
    counts = {s: sum(f.status == s for f in found) for s in ("met", "missed", "not measured")}
    return {
        "mode": mode,
        "machine": machine(load_before),
        "summary": counts,
        "figures": [asdict(f) for f in found],
        "runs": runs or [],
        "sources": source_notes(results),
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    s = report["summary"]
    load = (
        f"{m['load_average_before']} before, {m['load_average_after']} after"
        if report["runs"] and m.get("load_average_before")
        else f"{m['load_average_after']} when the report was written"
    )
    lines = [
        "# Benchmark report",
        "",
        *(
            [
                "**Quick run: every benchmark scaled down to check that it works. These figures"
                " are not comparable with the goals, which are about the full sizes named.**",
                "",
            ]
            if report["mode"].startswith("quick")
            else []
        ),
        f"{s['met']} goals met, {s['missed']} missed, {s['not measured']} not measured "
        f"({report['mode']}).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}. Load average (1, 5, 15 min): {load}. "
        f"Commit {m['git_commit']}, {m['date']}.",
        "",
        "Figures are indicative: one small machine, where other work may compete for the "
        "cores (each results file's own note is below). Regenerate with `fleet bench`.",
        "",
        "| area | figure | measured | goal | verdict | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for f in report["figures"]:
        measured = fmt(f["value"]) + (
            f" {f['unit']}" if f["value"] is not None and f["unit"] else ""
        )
        verdict = {"met": "**met**", "missed": "**missed**"}.get(f["status"], f["status"])
        notes = f"{f['note']} ({f['source']})" if f["note"] else f["source"]
        lines.append(
            f"| {f['area']} | {f['label']} | {measured} | {f['goal']} | {verdict} | {cell(notes)} |"
        )
    if report["runs"]:
        lines += [
            "",
            "## Runs",
            "",
            "| benchmark | command | exit | seconds | load before | load after |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in report["runs"]:
            lines.append(
                f"| {r['name']} | `{r['command']}` | {r['exit_code']} | {r['seconds']:.0f} | "
                f"{r['load_before']} | {r['load_after']} |"
            )
    lines += [
        "",
        "## Where each results file says it ran",
        "",
        "| file | measured | machine | caveat |",
        "| --- | --- | --- | --- |",
    ]
    for n in report["sources"]:
        lines.append(
            f"| {n['file']} | {n['measured']} | {cell(n['machine'])} | {cell(n['caveat'])} |"
        )
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).replace("|", "/").split())


def write(report: dict[str, Any], folder: Path = RESULTS, stem: str = "report") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    path = folder / f"{stem}.md"
    path.write_text(markdown(report))
    return path


def main() -> int:
    path = write(build(load_results()))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
