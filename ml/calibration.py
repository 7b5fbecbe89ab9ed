"""The threshold from a false-alarm budget, on recent live data that looks healthy.

A percentile of healthy validation errors says how often a *reading* crosses the threshold;
a fleet engineer's budget is how often a *car* raises an alarm (ml/verdict.py). Readings of one
car are not independent (a car's own baseline, its warm-ups and charging stops), so the rule's
alarm rate cannot be derived from a per-reading quantile: it is measured. On a recent slice of
live scores (no labels needed), cars that look failing are set aside (a robust cut: cars whose
median score is in the slice's top ``failing_share``, or above every other car's by far), and
the threshold is where the verdict rule's statistic (the RAISE_K-th largest of a car's last
RAISE_N scores) is crossed at most ``budget`` times per 1,000 car-hours on the rest, its far
tail extrapolated as exponential (a slice of a few hundred car-hours cannot show a rate of
one in a thousand).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ml import verdict
from ml.alarms import car_starts

TAIL_FROM = 0.99
DEFAULT_BUDGET = 0.5  # alarms per 1,000 car-hours: half the goal, a margin for a new fleet


def alarm_rate(
    scores: npt.NDArray[np.float64], starts: npt.NDArray[np.bool_], threshold: float, hours: float
) -> float:
    """Alarms per 1,000 car-hours the verdict rule raises at ``threshold``."""
    alarm = verdict.car_alarms(scores >= threshold, starts)
    return float(verdict.alarm_onsets(alarm, starts).sum()) / hours * 1000 if hours else 0.0


def calibrate(
    scores: npt.NDArray[Any],
    car_ids: npt.NDArray[Any],
    interval_ms: int,
    budget: float = DEFAULT_BUDGET,
    failing_share: float = 0.05,
) -> dict[str, Any]:
    """The threshold meeting ``budget`` on scores of readings car by car (each car's in order)."""
    scores = np.asarray(scores, np.float64)
    cars = np.asarray(car_ids).astype(str)
    starts = car_starts(cars)
    car = np.cumsum(starts) - 1
    n_cars = int(car[-1]) + 1 if len(car) else 0
    per_car = np.split(scores, np.flatnonzero(starts)[1:])
    medians = np.array([np.median(s) for s in per_car])
    cut = np.quantile(medians, 1.0 - failing_share) if n_cars else np.inf
    looks_healthy = medians[car] <= cut
    kept, kept_starts = scores[looks_healthy], car_starts(cars[looks_healthy])
    hours = len(kept) * interval_ms / 3_600_000
    # A calm car raises an alarm when the RAISE_K-th largest of its last RAISE_N scores crosses
    # the threshold: the threshold is a quantile of that statistic, whose tail beyond its 99th
    # percentile is taken as exponential (peaks over a threshold), so a budget rarer than the
    # slice can show is still met by extrapolation rather than by "no alarm seen".
    stat = kth_of_last(kept, kept_starts)
    u = float(np.quantile(stat, TAIL_FROM))
    over = stat > u
    runs = int((over & ~np.r_[False, over[:-1]]).sum()) or 1
    mean_run = max(1.0, float(over.sum()) / runs)  # readings per excursion above u
    per_reading = budget / 1000 * interval_ms / 3_600_000 * mean_run
    p_u = float(over.mean())
    scale = float((stat[over] - u).mean()) if over.any() else 0.0
    if per_reading < p_u and scale > 0:
        threshold = u + scale * float(np.log(p_u / per_reading))
    else:
        threshold = float(np.quantile(stat, 1.0 - per_reading))
    return {
        "threshold": threshold,
        "budget_per_1000_car_hours": budget,
        "measured_rate_at_threshold": alarm_rate(kept, kept_starts, threshold, hours),
        "reading_quantile": float((kept < threshold).mean()),
        "car_hours": hours,
        "cars": n_cars,
        "cars_set_aside": int(n_cars - np.unique(car[looks_healthy]).size),
        "method": f"exponential tail beyond the {TAIL_FROM:.0%} point of the {verdict.RAISE_K}"
        f"rd largest of each car's last {verdict.RAISE_N} scores",
        "rule": f"{verdict.RAISE_K} of {verdict.RAISE_N}, clear after {verdict.CLEAR_M}",
    }


def kth_of_last(scores: npt.NDArray[np.float64], starts: npt.NDArray[np.bool_]) -> Any:
    """Per reading, the RAISE_K-th largest of its car's last RAISE_N scores (-inf short)."""
    n = len(scores)
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    lags = np.arange(verdict.RAISE_N)
    idx = np.arange(n)[:, None] - lags[None, :]
    window = np.where(idx >= first[:, None], scores[np.maximum(idx, 0)], -np.inf)
    return np.sort(window, axis=1)[:, -verdict.RAISE_K]
