"""Evaluation metrics as pure numpy: ROC-AUC, threshold choice, per-mode recall, detection delay."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.contract import FAILURE_MODES

Scores = npt.NDArray[np.floating[Any]]
Bools = npt.NDArray[np.bool_]


def roc_auc(scores: Scores, truth: Bools) -> float:
    """Area under the ROC curve by the rank statistic (ties count half)."""
    truth = np.asarray(truth, bool)
    pos, neg = int(truth.sum()), int((~truth).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), float)
    sorted_scores = np.asarray(scores)[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[truth].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def roc_curve(scores: Scores, truth: Bools, points: int = 200) -> tuple[Scores, Scores]:
    """False-positive and true-positive rates at ``points`` thresholds (for plots)."""
    truth = np.asarray(truth, bool)
    thresholds = np.unique(np.quantile(scores, np.linspace(0, 1, points)))[::-1]
    fpr = np.array([(scores[~truth] >= t).mean() for t in thresholds])
    tpr = np.array([(scores[truth] >= t).mean() for t in thresholds])
    return np.r_[0.0, fpr, 1.0], np.r_[0.0, tpr, 1.0]


def threshold_at_false_alarm_rate(healthy_scores: Scores, rate: float) -> float:
    """The score above which only ``rate`` of healthy readings fall."""
    return float(np.quantile(healthy_scores, 1.0 - rate))


def best_f1_threshold(scores: Scores, truth: Bools, candidates: int = 400) -> float:
    """The threshold that maximizes F1 on labelled data."""
    grid = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, candidates)))
    best, best_t = -1.0, float(grid[-1])
    for t in grid:
        f1 = classification(scores, truth, float(t))["f1"]
        if f1 > best:
            best, best_t = f1, float(t)
    return best_t


def classification(scores: Scores, truth: Bools, threshold: float) -> dict[str, float]:
    verdict = np.asarray(scores) >= threshold
    truth = np.asarray(truth, bool)
    tp = float((verdict & truth).sum())
    fp = float((verdict & ~truth).sum())
    fn = float((~verdict & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    false_alarm = fp / max(1.0, float((~truth).sum()))
    return {"precision": precision, "recall": recall, "f1": f1, "false_alarm_rate": false_alarm}


def recall_per_mode(verdict: Bools, modes: Bools, only: bool = True) -> dict[str, dict[str, float]]:
    """Recall per failure mode. With ``only``, on readings where that mode is the only one
    active, so a mode is not credited with detections another mode caused."""
    active_count = modes.sum(axis=1)
    out: dict[str, dict[str, float]] = {}
    for j, mode in enumerate(FAILURE_MODES):
        mask = modes[:, j] & (active_count == 1) if only else modes[:, j]
        n = int(mask.sum())
        out[mode] = {
            "readings": n,
            "recall": float(verdict[mask].mean()) if n else float("nan"),
        }
    return out


def detection_delays(
    car_ids: npt.NDArray[Any], seq: npt.NDArray[np.int64], modes: Bools, verdict: Bools
) -> dict[str, Any]:
    """Readings from each failure's onset on a car to that car's first anomalous verdict.

    A failure's onset is the first reading of the car with that mode active while the car was
    healthy before it (so later modes, already masked by an earlier one, are not counted).
    Returns per-mode and overall medians, and how many onsets were never detected.
    """
    cars = np.asarray(car_ids).astype(str)
    order = np.lexsort((seq, cars))
    cars, seq_sorted = cars[order], np.asarray(seq)[order]
    modes, verdict = modes[order], np.asarray(verdict, bool)[order]
    any_active = modes.any(axis=1)
    boundaries = np.flatnonzero(np.r_[True, cars[1:] != cars[:-1], True])
    per_mode: dict[str, list[int]] = {m: [] for m in FAILURE_MODES}
    missed: dict[str, int] = dict.fromkeys(FAILURE_MODES, 0)
    for start, end in itertools.pairwise(boundaries):
        active = np.flatnonzero(any_active[start:end])
        if len(active) == 0 or active[0] == 0:
            continue  # healthy throughout, or failing before we saw it: no onset observed
        onset = start + int(active[0])
        hits = np.flatnonzero(verdict[onset:end])
        for j in np.flatnonzero(modes[onset]):
            mode = FAILURE_MODES[j]
            if len(hits):
                per_mode[mode].append(int(seq_sorted[onset + hits[0]] - seq_sorted[onset]))
            else:
                missed[mode] += 1
    all_delays = [d for ds in per_mode.values() for d in ds]
    return {
        "median": float(np.median(all_delays)) if all_delays else float("nan"),
        "onsets": len(all_delays) + sum(missed.values()),
        "missed": sum(missed.values()),
        "per_mode": {
            m: {
                "median": float(np.median(per_mode[m])) if per_mode[m] else float("nan"),
                "onsets": len(per_mode[m]) + missed[m],
                "missed": missed[m],
            }
            for m in FAILURE_MODES
        },
    }


def evaluate(
    scores: Scores,
    threshold: float,
    *,
    truth: Bools,
    modes: Bools,
    car_ids: npt.NDArray[Any],
    seq: npt.NDArray[np.int64],
    false_alarm_rate: float = 0.01,
) -> dict[str, Any]:
    """Every figure the model card reports, for one model's scores on a labelled slice."""
    scores = np.asarray(scores, float)
    at_rate = threshold_at_false_alarm_rate(scores[~truth], false_alarm_rate)
    verdict_at_rate = scores >= at_rate
    return {
        "readings": len(scores),
        "failing_readings": int(truth.sum()),
        "roc_auc": roc_auc(scores, truth),
        "threshold": threshold,
        "at_threshold": classification(scores, truth, threshold),
        "false_alarm_target": false_alarm_rate,
        "threshold_at_false_alarm_target": at_rate,
        "at_false_alarm_target": classification(scores, truth, at_rate),
        "recall_per_mode_at_false_alarm_target": recall_per_mode(verdict_at_rate, modes),
        "detection_delay_at_threshold": detection_delays(car_ids, seq, modes, scores >= threshold),
    }
