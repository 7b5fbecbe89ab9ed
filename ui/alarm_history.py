"""Alarms over time, replayed from the history collection's scores (pure but for one query).

A twin holds only the alarm a car is in now; when cars were in alarm before is in the scores
the history collection keeps (`twin/history.py`, one document per score with its flag and the
scored reading's seq). The car's verdict is a function of its flags in reading order
(ml/verdict.py), so it is replayed here: for one car from all its scores, for the fleet from
the flagged scores alone (a reading's place is its seq; readings between flagged ones were
calm, which is all the rule needs to know about them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from ml import verdict

COLUMNS = ["start", "end", "open"]
MAX_FLAGGED = 200_000  # flagged scores read for one fleet chart at most
DEFAULT_INTERVAL_S = 10.0
EPOCH = pd.Timestamp(0, tz="UTC")


def car_alarm_periods(scores: pd.DataFrame) -> pd.DataFrame:
    """One car's alarm periods from its scores (``event_time``, ``anomalous``; oldest first):
    from the reading that raised each alarm to the one that cleared it, or to the last score
    (``open``) if it still holds."""
    if scores.empty:
        return pd.DataFrame(columns=COLUMNS)
    alarm = verdict.car_alarms(scores["anomalous"].to_numpy(bool))
    times = pd.to_datetime(scores["event_time"], utc=True).reset_index(drop=True)
    return _periods(alarm, times)


def _periods(alarm: np.ndarray, times: pd.Series) -> pd.DataFrame:
    change = np.diff(np.r_[0, alarm.astype(np.int8), 0])
    starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
    rows = [
        {
            "start": times.iloc[s],
            "end": times.iloc[min(e, len(times) - 1)],
            "open": e >= len(times),
        }
        for s, e in zip(starts, ends, strict=True)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def fleet_alarm_periods(flagged: list[dict[str, Any]]) -> pd.DataFrame:
    """Every car's alarm periods from its flagged scores only (``car``, ``seq``, ``t``)."""
    if not flagged:
        return pd.DataFrame(columns=["car", *COLUMNS])
    frame = pd.DataFrame(flagged, columns=["car", "seq", "t"]).drop_duplicates(["car", "seq"])
    frame["t"] = pd.to_datetime(frame["t"], utc=True)
    frame = frame.sort_values(["car", "seq"])
    interval = _interval_s(frame)
    parts = []
    for car, rows in frame.groupby("car", sort=False):
        seqs = rows["seq"].to_numpy(np.int64)
        ms = ((rows["t"] - EPOCH) / pd.Timedelta(milliseconds=1)).to_numpy(np.float64)
        # Every reading from the first flagged one to CLEAR_M after the last: calm between.
        positions = np.arange(seqs[0], seqs[-1] + verdict.CLEAR_M + 1)
        flags = np.isin(positions, seqs)
        alarm = verdict.car_alarms(flags)
        at = np.where(
            positions <= seqs[-1],
            np.interp(positions, seqs, ms),
            ms[-1] + (positions - seqs[-1]) * interval * 1000,
        )
        periods = _periods(alarm, pd.Series(pd.to_datetime(at, unit="ms", utc=True)))
        parts.append(periods.assign(car=car))
    return pd.concat(parts, ignore_index=True)[["car", *COLUMNS]]


def _interval_s(frame: pd.DataFrame) -> float:
    """The fleet's reading interval: the median time per seq between a car's flagged scores."""
    seq_gap = frame.groupby("car")["seq"].diff()
    time_gap = frame.groupby("car")["t"].diff().dt.total_seconds()
    per_seq = (time_gap / seq_gap)[seq_gap > 0]
    return float(per_seq.median()) if len(per_seq) else DEFAULT_INTERVAL_S


def cars_in_alarm(
    periods: pd.DataFrame, since: datetime, until: datetime, buckets: int = 60
) -> pd.DataFrame:
    """Per time step in [since, until]: cars in alarm at that moment, and alarms raised in
    the step before it."""
    edges = pd.date_range(pd.Timestamp(since), pd.Timestamp(until), periods=buckets + 1)
    edges = edges.tz_localize("UTC") if edges.tz is None else edges.tz_convert("UTC")
    if periods.empty:
        return pd.DataFrame({"time": edges, "cars in alarm": 0, "raised": 0})
    # An open alarm holds to the end of the range; a cleared one up to its clearing reading.
    end = np.where(
        periods["open"].to_numpy(bool),
        np.datetime64(edges[-1].tz_convert(None)) + np.timedelta64(1, "s"),
        pd.to_datetime(periods["end"], utc=True).dt.tz_convert(None).to_numpy(),
    )
    start = pd.to_datetime(periods["start"], utc=True).dt.tz_convert(None).to_numpy()
    moments = edges.tz_convert(None).to_numpy()
    held = ((start[None, :] <= moments[:, None]) & (moments[:, None] < end[None, :])).sum(axis=1)
    raised = np.r_[0, np.histogram(_ms(start), _ms(moments))[0]]
    return pd.DataFrame({"time": edges, "cars in alarm": held, "raised": raised})


def _ms(times: np.ndarray) -> np.ndarray:
    return (times.astype("datetime64[ms]") - np.datetime64(0, "ms")).astype(np.float64)


def flagged_scores(
    database: Any, collection: str, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """The flagged scores of every car in [since, until] (car, seq, t), from the history."""
    query = {"kind": "score", "is_anomaly": True, "t": {"$gte": since, "$lte": until}}
    cursor = database[collection].find(query, {"_id": 0, "car": 1, "seq": 1, "t": 1})
    return list(cursor.limit(MAX_FLAGGED))
