"""The threshold from a false-alarm budget, on recent live data that looks healthy.

A percentile of healthy validation errors says how often a *reading* crosses the threshold;
a fleet engineer's budget is how often a *car* raises an alarm (ml/verdict.py). Readings of one
car are not independent (a car's own baseline, its warm-ups and charging stops), so the rule's
alarm rate cannot be derived from a per-reading quantile: it is measured. On a recent slice of
live scores (no labels needed), cars that look failing are set aside (cars whose median score is
in the slice's top ``failing_share``, and cars above the slice's 99th percentile on more than
a tenth of their readings: a failure that began during the slice), and
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
TAIL_SCALE_AT = 0.999  # the tail's second quantile, which sets its scale
FENCE = 3.0  # interquartile ranges beyond the upper quartile of cars' peaks: set aside
CLASSIFIER_MIN_SCALE = float(np.log(2.0))  # -log(1 - p) at p = 0.5
FLOOR = 1e-30  # scores are floored here before their logarithm
SUSTAINED = 0.1  # share of a car's readings above the TAIL_FROM point that sets it aside
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
    # Scores are positive (an error, -log(1-p)) with tails heavier than exponential (cars
    # differ; a classifier's healthy scores span decades): the tail is fitted to their logs.
    scores = np.log(np.maximum(np.asarray(scores, np.float64), FLOOR))
    cars = np.asarray(car_ids).astype(str)
    starts = car_starts(cars)
    car = np.cumsum(starts) - 1
    n_cars = int(car[-1]) + 1 if len(car) else 0
    per_car = np.split(scores, np.flatnonzero(starts)[1:])
    medians = np.array([np.median(s) for s in per_car])
    cut = np.quantile(medians, 1.0 - failing_share) if n_cars else np.inf
    looks_healthy = medians[car] <= cut
    # A car whose failure began during the slice still has a healthy median: cars above the
    # slice's TAIL_FROM point on more than SUSTAINED of their readings are set aside too (a
    # calm car is there on about 1 - TAIL_FROM of them)...
    stat_all = kth_of_last(scores, starts)
    high = stat_all > np.quantile(stat_all, TAIL_FROM) if len(stat_all) else stat_all > 0
    share_high = np.bincount(car, weights=high, minlength=n_cars) / np.bincount(car)
    looks_healthy &= share_high[car] <= SUSTAINED
    # ...and so are cars whose highest sustained score lies far out among the cars' highest
    # (beyond the upper quartile by FENCE interquartile ranges, in logs): a failing car's is
    # decades above a healthy one's, and a few of them left in stretched the fitted tail
    # (the threshold came out 7-80 times above any healthy reading's score).
    peak = np.full(n_cars, -np.inf)
    np.maximum.at(peak, car, stat_all)
    q1, q3 = np.quantile(peak, [0.25, 0.75]) if n_cars else (0.0, 0.0)
    looks_healthy &= peak[car] <= q3 + FENCE * (q3 - q1)
    kept, kept_starts = scores[looks_healthy], car_starts(cars[looks_healthy])
    hours = len(kept) * interval_ms / 3_600_000
    # A calm car raises an alarm when the RAISE_K-th largest of its last RAISE_N scores crosses
    # the threshold: the threshold is a quantile of that statistic, whose tail beyond its 99th
    # percentile is taken as exponential (peaks over a threshold), so a budget rarer than the
    # slice can show is still met by extrapolation rather than by "no alarm seen".
    stat = kth_of_last(kept, kept_starts)
    u, far = (float(q) for q in np.quantile(stat, [TAIL_FROM, TAIL_SCALE_AT]))
    over = stat > u
    runs = int((over & ~np.r_[False, over[:-1]]).sum()) or 1
    mean_run = max(1.0, float(over.sum()) / runs)  # readings per excursion above u
    per_reading = budget / 1000 * interval_ms / 3_600_000 * mean_run
    p_u = float(over.mean())
    # The tail's scale from two quantiles, not the mean excess over u: failing readings that
    # slipped past the set-aside would stretch a mean (and the threshold with it).
    p_far = float((stat > far).mean())
    scale = (far - u) / float(np.log(p_u / p_far)) if 0 < p_far < p_u else 0.0
    if per_reading < p_u and scale > 0:
        log_threshold = u + scale * float(np.log(p_u / per_reading))
    else:
        log_threshold = float(np.quantile(stat, 1.0 - per_reading))
    # Never below what the slice itself shows: at most the budget's alarms in its car-hours
    # (the extrapolated tail may be lighter than the real one).
    allowed = int(budget * hours / 1000)
    kept_car = np.cumsum(kept_starts) - 1
    kept_peak = np.full(int(kept_car[-1]) + 1 if len(kept_car) else 0, -np.inf)
    np.maximum.at(kept_peak, kept_car, stat)
    if len(kept_peak) > allowed:
        log_threshold = max(log_threshold, float(np.sort(kept_peak)[::-1][allowed]) + 1e-9)
    threshold = float(np.exp(log_threshold))
    kept = np.exp(kept)
    return {
        "threshold": threshold,
        "budget_per_1000_car_hours": budget,
        "measured_rate_at_threshold": alarm_rate(kept, kept_starts, threshold, hours),
        "reading_quantile": float((kept < threshold).mean()),
        "car_hours": hours,
        "cars": n_cars,
        "cars_set_aside": int(n_cars - np.unique(car[looks_healthy]).size),
        "method": f"exponential tail of the log of the {verdict.RAISE_K}rd largest of each "
        f"car's last {verdict.RAISE_N} scores beyond its {TAIL_FROM:.0%} point, its scale from "
        f"the {TAIL_FROM:.0%} and {TAIL_SCALE_AT:.1%} points; cars whose peak is beyond "
        f"{FENCE:g} IQR of the cars' peaks set aside; never below the slice's own alarms",
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


def calibrate_model(
    model: Any,
    columns: Any,
    interval_ms: int,
    budget: float = DEFAULT_BUDGET,
    failing_share: float = 0.05,
) -> dict[str, Any]:
    """Calibrate a loaded model (registry.LoadedModel) on a recent slice of live readings, car
    by car (each car's in order; no labels used). An autoencoder alone gets its threshold. A
    combined model first gets each model's own threshold at the budget (they become the
    scales of the combined score, so both models count alike), then the combined score's
    threshold at the budget. Returns the calibration with ``threshold`` and, for a combined
    model, ``decision`` (the card's new scales); ``apply`` puts both on the model and card."""
    from ml import features as ft

    parts = model.parts(ft.transform(columns, model.normalizer))
    cars = columns["car_id"]
    if model.decision is None:
        return calibrate(parts["autoencoder"], cars, interval_ms, budget, failing_share)
    scales = {
        name: calibrate(parts[name], cars, interval_ms, budget, failing_share)["threshold"]
        for name in ("autoencoder", "classifier")
    }
    # A classifier is sure of the healthy cars it was trained on (scores of 1e-9): calibrated
    # there, its scale came out near 4e-6, and a shifted fleet's healthy cars crossed it
    # (30 false alarms per 1,000 car-hours). It speaks only when it finds a failure more
    # likely than not.
    scales["classifier"] = max(scales["classifier"], CLASSIFIER_MIN_SCALE)
    combined = np.maximum(
        parts["autoencoder"] / scales["autoencoder"], parts["classifier"] / scales["classifier"]
    )
    out = calibrate(combined, cars, interval_ms, budget, failing_share)
    out["decision"] = {
        **model.decision,
        "autoencoder_scale": scales["autoencoder"],
        "classifier_scale": scales["classifier"],
    }
    return out


def apply(model: Any, calibrated: dict[str, Any]) -> None:
    """Put a calibration on a loaded model and its card (the card keeps what it had before as
    ``threshold_before_calibration``)."""
    card = model.card
    card.setdefault("threshold_before_calibration", card["threshold"])
    if "decision" in calibrated:
        card["decision"] = calibrated["decision"]
    card["threshold"] = model.threshold = float(calibrated["threshold"])
    card["threshold_method"] = "false-alarm budget"
    card["calibration_of_threshold"] = {k: v for k, v in calibrated.items() if k != "decision"}


def recent_by_car(columns: Any, hours: float) -> tuple[dict[str, Any], int]:
    """The readings of the last ``hours`` of event time, car by car (each car's in seq order),
    and the fleet's reading interval in ms (the median gap between a car's readings)."""
    times = np.asarray(columns["event_time"], np.int64)
    keep = times >= times.max() - int(hours * 3_600_000) if len(times) else times > 0
    cars = np.asarray(columns["car_id"]).astype(str)[keep]
    order = np.lexsort((np.asarray(columns["seq"])[keep], cars))
    out = {name: np.asarray(values)[keep][order] for name, values in columns.items()}
    gaps = np.diff(out["event_time"])[~car_starts(out["car_id"])[1:]]
    return out, int(np.median(gaps)) if len(gaps) else 10_000
