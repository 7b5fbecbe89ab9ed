"""The twin projector's lag during a default `fleet demo`, as the explorer's overview shows it.

    .venv/bin/python bench/demo_lag.py                 # 10 minutes of the default demo
    .venv/bin/python bench/demo_lag.py --minutes 3 -- --cars 500

Runs `fleet demo --no-ui` (default fleet: 1,000 cars, a reading every 10 simulated seconds,
10x time-lapse: 1,000 readings/s) on its own stack (free ports), and every few seconds reads
what the overview's "Twin projector lag" reads (ui/stream_stats.py: telemetry events the
projector's group has not committed) and the event rate, so lag in seconds = events / rate.
Writes bench/results/demo.json and demo.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fleet.settings import Settings  # noqa: E402
from fleet.stack.ports import private_stack_environment  # noqa: E402
from ui import stream_stats  # noqa: E402

RESULTS = HERE / "results"
EVERY_S = 5.0


def sample(settings: Settings) -> tuple[int, int] | None:
    """(end offsets of the telemetry topic, the projector's lag), None before the topic."""
    try:
        stats = stream_stats.topic_stats(settings, settings.topics.telemetry, settings.groups.twin)
    except Exception:  # the stack is still starting: no sample yet
        return None
    return stats.end_offsets, stats.lag if stats.lag is not None else stats.end_offsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="after the first twin lag")
    parser.add_argument("demo_args", nargs="*", help="more `fleet demo` options, after --")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="demo-lag-"))
    env = dict(os.environ) | private_stack_environment(home)
    os.environ.update(env)
    settings = Settings()
    fleet = Path(sys.executable).with_name("fleet")
    log = (home / "demo.out").open("w")
    demo = subprocess.Popen(
        [str(fleet), "demo", "--no-ui", *args.demo_args], env=env, stdout=log, stderr=log
    )
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    previous: tuple[float, int] | None = None
    try:
        deadline: float | None = None
        while deadline is None or time.monotonic() < deadline:
            if demo.poll() is not None:
                raise RuntimeError(f"fleet demo exited ({demo.returncode}); see {log.name}")
            now = time.monotonic()
            found = sample(settings)
            if found is not None and found[0] > 0:
                ends, lag = found
                if deadline is None:
                    deadline = now + args.minutes * 60
                rate = None
                if previous is not None and now > previous[0]:
                    rate = (ends - previous[1]) / (now - previous[0])
                previous = (now, ends)
                samples.append(
                    {
                        "t": round(now - started, 1),
                        "events": ends,
                        "lag": lag,
                        "rate": None if rate is None else round(rate, 1),
                        "lag_s": round(lag / rate, 2) if rate else None,
                    }
                )
                print(json.dumps(samples[-1]), flush=True)
            time.sleep(EVERY_S)  # a sampling period, not synchronization
        try:
            overview = overview_now(settings)
        except Exception as exc:  # the lag figures must not be lost for it
            overview = {"errors": [repr(exc)], "metrics": {}, "notes": [], "alarms": []}
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(300)
    write(samples, overview, args)


def overview_now(settings: Settings) -> dict[str, Any]:
    """What the explorer's overview shows now: its figures, its notes and the cars-in-alarm
    chart (rendered with Streamlit's AppTest, as the UI tests do)."""
    from streamlit.testing.v1 import AppTest

    from ui.context import SETTINGS_KEY

    at = AppTest.from_file(str(HERE.parent / "ui" / "app.py"), default_timeout=180)
    at.session_state[SETTINGS_KEY] = settings
    at.switch_page("views/overview.py")
    at.run()
    notes = [*at.info, *at.warning, *at.error, *at.caption, *at.success]
    alarms: list[int] = []
    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            frame = pa.ipc.open_stream(dataset.data.data).read_pandas()
            if "cars in alarm" in frame.columns:
                alarms = frame.sort_values("time")["cars in alarm"].astype(int).tolist()
    return {
        "errors": [e.message for e in at.exception],
        "metrics": {m.label: m.value for m in at.metric},
        "notes": [str(n.value) for n in notes],
        "alarms": alarms,
    }


def write(
    samples: list[dict[str, Any]], overview: dict[str, Any], args: argparse.Namespace
) -> None:
    seconds = np.array([s["lag_s"] for s in samples if s["lag_s"] is not None])
    events = np.array([s["lag"] for s in samples])
    figures = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "demo_args": args.demo_args,
        "minutes": args.minutes,
        "samples": len(samples),
        "lag_events_p50": int(np.percentile(events, 50)),
        "lag_events_max": int(events.max()),
        "lag_s_p50": round(float(np.percentile(seconds, 50)), 2),
        "lag_s_p95": round(float(np.percentile(seconds, 95)), 2),
        "lag_s_max": round(float(seconds.max()), 2),
        "share_of_samples_under_2_s": round(float((seconds < 2).mean()), 3),
        "load_1m_end": round(os.getloadavg()[0], 1),
        "series": samples,
        "overview": overview,
    }
    (RESULTS / "demo.json").write_text(json.dumps(figures, indent=1) + "\n")
    lines = [
        "# The projector's lag during a default `fleet demo`",
        "",
        f"{figures['when']}, `fleet demo --no-ui {' '.join(args.demo_args)}`, "
        f"{args.minutes:g} minutes from the first reading in Kafka, a sample every {EVERY_S:g} s "
        "(what the overview's *Twin projector lag* reads; seconds = events / event rate).",
        "",
        "| lag (events) p50 / max | lag (s) p50 / p95 / max | samples under 2 s | load |",
        "| ---: | ---: | ---: | ---: |",
        f"| {figures['lag_events_p50']:,} / {figures['lag_events_max']:,} | "
        f"{figures['lag_s_p50']} / {figures['lag_s_p95']} / {figures['lag_s_max']} | "
        f"{figures['share_of_samples_under_2_s']:.1%} | {figures['load_1m_end']} |",
        "",
        f"The overview at the end (rendered with AppTest; errors: {overview['errors'] or 'none'}):",
        "",
        *(f"- {label}: {value}" for label, value in overview["metrics"].items()),
        "- cars in alarm over the last hour (chart): "
        + (", ".join(map(str, overview["alarms"])) or "no chart"),
        *(f"- note: {note}" for note in overview["notes"]),
        "",
    ]
    (RESULTS / "demo.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
