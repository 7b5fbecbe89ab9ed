"""`fleet lake ls | stats | export` as a user runs them, against an archived lake."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import polars as pl
import pytest

from fleet.settings import Settings
from fleet.waiting import wait_for
from tests.lake.conftest import archiving, committed, end_offsets, produce
from tests.lake.helpers import T0, reading
from tests.lake.test_faults import FLEET

pytestmark = pytest.mark.integration


def fleet(
    settings: Settings, stack_env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    env = (
        os.environ
        | stack_env
        | {"FLEET_GCS_BUCKET": settings.gcs.bucket, "FLEET_LOG_FORMAT": "json"}
    )
    return subprocess.run(
        [FLEET, "lake", *args], check=False, env=env, capture_output=True, text=True, timeout=120
    )


def test_ls_stats_and_export(
    lake_settings: Settings, stack_env: dict[str, str], tmp_path: Path
) -> None:
    records = [reading(i, event_time=T0 + i * 60_000) for i in range(180)]  # 3 hours, 7 cars
    produce(lake_settings, records)
    topic, n = lake_settings.topics.telemetry, lake_settings.topics.telemetry_partitions
    with archiving(lake_settings):
        ends = end_offsets(lake_settings, topic, n)
        wait_for(lambda: committed(lake_settings, topic, n) == ends, 60, "archived")

    listed = fleet(
        lake_settings,
        stack_env,
        "ls",
        "--from",
        "2026-01-01T01:00:00",
        "--to",
        "2026-01-01T02:00:00",
        "--json",
    )
    assert listed.returncode == 0, listed.stderr
    objects = [json.loads(line) for line in listed.stdout.splitlines()]
    assert objects and all("/date=2026-01-01/hour=01/" in o["name"] for o in objects)
    assert sum(o["records"] for o in objects) == 60

    stats = fleet(lake_settings, stack_env, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["events"] == 180 and data["cars"] == 7
    assert [row["events"] for row in data["volume"]] == [60, 60, 60]
    modes = {row["mode"]: row for row in data["failure_modes"]}
    labelled = [r for r in records if r["failure_occurred"] is not None]
    assert modes["coolant"]["events"] == sum(1 for r in labelled if r["failure_modes"])
    assert modes["any"]["events"] == sum(1 for r in labelled if r["failure_occurred"])
    human = fleet(lake_settings, stack_env, "stats", "--by", "day")
    assert human.returncode == 0 and "180 events, 7 cars" in human.stdout

    out = tmp_path / "cars.parquet"
    exported = fleet(
        lake_settings,
        stack_env,
        "export",
        "--from",
        "2026-01-01T00:30:00",
        "--to",
        "2026-01-01T02:00:00",
        "--cars",
        "car-1,car-2",
        "--format",
        "parquet",
        "-o",
        str(out),
    )
    assert exported.returncode == 0, exported.stderr
    frame = pl.read_parquet(out)
    expected = [
        r
        for r in records
        if r["car_id"] in ("car-1", "car-2")
        and T0 + 30 * 60_000 <= r["event_time"] < T0 + 2 * 3_600_000
    ]
    assert sorted(frame["seq"].to_list()) == sorted(r["seq"] for r in expected)

    csv = tmp_path / "all.csv"
    exported = fleet(
        lake_settings,
        stack_env,
        "export",
        "--format",
        "csv",
        "-o",
        str(csv),
        "--columns",
        "car_id,seq,failure_modes",
    )
    assert exported.returncode == 0, exported.stderr
    back = pl.read_csv(csv)
    assert back.columns == ["car_id", "seq", "failure_modes"] and back.height == 180
    assert set(back.filter(pl.col("seq") == 0)["failure_modes"]) == {"coolant|tire_pressure_1_2"}

    bad = fleet(lake_settings, stack_env, "export", "--format", "xml", "-o", str(csv))
    assert bad.returncode == 2 and "parquet or csv" in bad.stderr
