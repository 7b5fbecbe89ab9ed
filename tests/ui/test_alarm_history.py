"""Alarms over time replayed from scores (ui/alarm_history.py, pure): the fleet's replay from
flagged scores alone gives each car's periods as the full replay does, and the fleet series
counts what the periods say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ui import alarm_history

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def scores_of(flags: list[bool], step_s: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_time": [T0 + timedelta(seconds=step_s * i) for i in range(len(flags))],
            "seq": range(len(flags)),
            "anomalous": flags,
        }
    )


@pytest.mark.parametrize("seed", range(5))
def test_flagged_scores_alone_give_the_full_replays_periods(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Calm, then a failure flagging most readings, then calm again (and a stray flag or two).
    flags = rng.random(200) < 0.02
    flags[60:120] = rng.random(60) < 0.8
    full = alarm_history.car_alarm_periods(scores_of(list(flags) + [False] * 12))
    frame = scores_of(list(flags))
    flagged = [
        {"car": "a", "seq": int(r.seq), "t": r.event_time}
        for r in frame[frame.anomalous].itertuples()
    ]
    replayed = alarm_history.fleet_alarm_periods(flagged)
    assert len(full) >= 1
    assert list(replayed["start"]) == list(full["start"])
    assert list(replayed["end"]) == list(full["end"])


def test_a_car_still_in_alarm_has_an_open_period() -> None:
    periods = alarm_history.car_alarm_periods(scores_of([False, True, True, True, True]))
    assert len(periods) == 1 and bool(periods["open"].iloc[0])
    assert periods["start"].iloc[0] == pd.Timestamp(T0 + timedelta(seconds=30))


def test_cars_in_alarm_counts_the_periods_at_each_moment() -> None:
    periods = pd.DataFrame(
        {
            "car": ["a", "b"],
            "start": [T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)],
            "end": [T0 + timedelta(minutes=30), T0 + timedelta(minutes=25)],
            "open": [False, True],
        }
    )
    series = alarm_history.cars_in_alarm(periods, T0, T0 + timedelta(minutes=60), buckets=12)
    held = dict(zip(series["time"], series["cars in alarm"], strict=True))
    at = lambda m: held[pd.Timestamp(T0 + timedelta(minutes=m))]  # noqa: E731
    assert (at(5), at(10), at(20), at(25), at(30), at(60)) == (0, 1, 2, 2, 1, 1)
    assert series["raised"].sum() == 2
