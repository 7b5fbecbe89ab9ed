from __future__ import annotations

import polars as pl

from lake.naming import HOUR_MS
from lake.stats import events_per_day, events_per_hour, failure_incidence, summary
from tests.lake.helpers import T0


def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "car_id": ["a", "a", "b", "b", "c"],
            "event_time": [T0, T0 + 10, T0 + HOUR_MS, T0 + 25 * HOUR_MS, T0 + 25 * HOUR_MS],
            "failure_occurred": [False, True, True, True, None],
            "failure_modes": [None, ["coolant"], ["coolant", "drive_shaft"], ["coolant"], None],
        }
    )


def test_events_per_hour_and_day_count_events_and_cars() -> None:
    hours = events_per_hour(frame())
    assert hours.select("date", "hour", "events", "cars").rows() == [
        ("2026-01-01", 0, 2, 1),
        ("2026-01-01", 1, 1, 1),
        ("2026-01-02", 1, 2, 2),
    ]
    assert events_per_day(frame()).select("date", "events", "cars").rows() == [
        ("2026-01-01", 3, 2),
        ("2026-01-02", 2, 2),
    ]


def test_failure_incidence_counts_labelled_events_and_cars_per_mode() -> None:
    table = {row["mode"]: row for row in failure_incidence(frame()).to_dicts()}
    assert table["any"]["events"] == 3 and table["any"]["cars"] == 2
    assert table["coolant"]["events"] == 3 and table["coolant"]["share_of_events"] == 3 / 4
    assert table["drive_shaft"]["events"] == 1 and table["drive_shaft"]["cars"] == 1
    assert table["firmware"]["events"] == 0  # every known mode is listed
    assert summary(frame())["cars"] == 3
