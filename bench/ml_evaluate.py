"""Alarms a fleet engineer can trust: train on the default fleet, judge the car verdicts on
fleets the model never saw, and time a training epoch.

    .venv/bin/python bench/ml_evaluate.py [--train-cars 300] [--train-hours 24]
        [--eval-cars 2000] [--eval-hours 12] [--quick]

Training: the default fleet profile (seed 1) for a simulated day, every few readings kept.
Evaluation (ml/fleet_eval.py, ml/alarms.py), each reading scored by the autoencoder as the live
scorer does, each car judged by ml/verdict.py's rule as its twin is:

(a) the default fleet, other cars and seeds;
(b) a shifted fleet: another failure mix, a hotter climate, cars spread half as wide again
    around their baselines, shorter battery ranges and lower charging thresholds;
(c) the seed's CSV (tests/data/car-sensor-data.csv), labelled by the seed car model's rules.

Writes bench/results/ml-evaluation.md and the figures to bench/results/ml.json. No servers.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench._ml_common import CAVEAT, RESULTS, write_results
from fleet.contract import SENSORS
from ingest.simulator import FleetSimulator, SimulationConfig
from ml import alarms, calibration, fleet_eval, registry, simdata, verdict
from ml import features as ft
from ml import train as training

CSV = Path(__file__).resolve().parent.parent / "tests" / "data" / "car-sensor-data.csv"
SHIFTED: dict[str, Any] = {
    "failure_mix": (
        ("coolant", 0.30),
        ("drive_shaft", 0.25),
        ("shock_absorber", 0.20),
        ("tire_pressure", 0.15),
        ("firmware", 0.10),
    ),
    "ambient_shift": 12.0,
    "spread": 1.5,
    "range_km": (150.0, 300.0),
    "charge_below": (0.05, 0.15),
}
INTERVAL_MS = 10_000


def training_columns(cars: int, hours: float, every: int, seed: int) -> dict[str, np.ndarray]:
    """The default fleet for ``hours``, then every
    ``every``-th reading of each car (the day's range of ambient temperatures and battery
    levels, in a tractable number of readings)."""
    steps = int(hours * 3600_000 / INTERVAL_MS)
    columns = simdata.fleet_columns(steps, cars=cars, seed=seed)
    keep = columns["seq"] % every == 0
    out = {k: v[keep] for k, v in columns.items()}
    out["failure_modes"] = np.array([()] * int(keep.sum()), dtype=object)
    return out


def pct(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"


def num(x: float, fmt: str = "{:.2f}") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def threshold_text(card: dict[str, Any]) -> str:
    c = card.get("calibration_of_threshold")
    if not c:
        return card.get("threshold_method", "")
    return (
        f"calibrated to {c['budget_per_1000_car_hours']:g} alarms per 1,000 car-hours on a "
        f"recent unlabelled slice of the default fleet ({c['cars']} other cars, "
        f"{c['car_hours']:,.0f} car-hours, {c['cars_set_aside']} cars set aside as looking "
        f"failing; ml/calibration.py), the {c['reading_quantile']:.3%} quantile of its "
        f"healthy-looking readings (at training, each model's 99th percentile of healthy "
        f"validation scores gave {card['percentile_threshold']:.4g})"
        + (
            f"; scales: autoencoder error {d['autoencoder_scale']:.4g}, classifier "
            f"{d['classifier_scale']:.4g}, each calibrated to the same budget alone"
            if (d := card.get("decision"))
            else ""
        )
    )


def model_text(card: dict[str, Any]) -> str:
    if card.get("decision"):
        return (
            "combined (the live scorer's): the larger of the autoencoder's error and the "
            "supervised classifier's score -log(1-p), each over its own scale (ml/registry.py)"
        )
    return "the autoencoder (the live scorer's)"


def table(results: dict[str, Any], card: dict[str, Any], args: argparse.Namespace) -> str:
    names = list(results)
    lines = [
        "# Alarms on fleets the model never saw",
        "",
        f"Model: {model_text(card)}, trained on the default fleet profile "
        f"(seed 1, {args.train_cars} cars x {args.train_hours:g} simulated hours, every "
        f"{args.train_every}th reading). Threshold {card['threshold']:.4g}: "
        f"{threshold_text(card)}. Car verdict (ml/verdict.py, as on the twin): "
        f"alarm when {verdict.RAISE_K} of the last {verdict.RAISE_N} readings score above the "
        f"threshold, cleared when none of the last {verdict.CLEAR_M} do.",
        "",
        "Datasets: " + "; ".join(f"**{n}**: {results[n]['description']}" for n in names) + ".",
        "",
        "| figure | goal | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]

    def row(label: str, goal: str, get: Any) -> None:
        lines.append(f"| {label} | {goal} | " + " | ".join(get(results[n]) for n in names) + " |")

    row(
        "readings / cars / car-hours",
        "",
        lambda r: f"{r['readings']:,} / {r['cars']:,} / {r['car_hours']:,.0f}",
    )
    row("readings with a failure active", "", lambda r: pct(r["failing_share"]))
    row(
        "healthy readings above the threshold",
        "",
        lambda r: f"{r['reading_flag_rate_healthy']:.3%}",
    )
    row("alarms raised (false)", "", lambda r: f"{r['alarms']:,} ({r['false_alarms']:,})")
    row(
        "false alarms per 1,000 car-hours",
        "<= 1",
        lambda r: num(r["false_alarms_per_1000_car_hours"]),
    )
    row("alarm precision", ">= 0.9", lambda r: num(r["alarm_precision"], "{:.3f}"))
    kinds = list(results[names[0]]["per_kind"])
    for kind in kinds:
        row(
            f"failures / out of spec (faults) / fault onset seen: {kind}",
            "",
            lambda r, k=kind: "{} / {} / {}".format(
                r["per_kind"][k]["failures"],
                r["per_kind"][k]["faults"],
                r["per_kind"][k]["fault_seen"],
            ),
        )
    for budget in alarms.BUDGETS_MIN:
        for kind in kinds:
            goal = ">= 95%" if budget == 5 else ""
            row(
                f"recall within {budget} min of fault onset: {kind}",
                goal,
                lambda r, k=kind, b=budget: "{} ({}/{})".format(
                    pct(r["per_kind"][k][f"within_{b}_min"]["recall"]),
                    r["per_kind"][k][f"within_{b}_min"]["detected"],
                    r["per_kind"][k][f"within_{b}_min"]["failures"],
                ),
            )
    for kind in kinds:
        row(
            f"alarmed before repair (or the data's end): {kind}",
            "",
            lambda r, k=kind: "{} ({}/{})".format(
                pct(r["per_kind"][k]["detected_share"]),
                r["per_kind"][k]["detected"],
                r["per_kind"][k]["failures"],
            ),
        )
    for kind in kinds:
        row(
            f"delay from fault onset, {kind}: median min (readings); p90 min",
            "",
            lambda r, k=kind: "{} ({}); {}".format(
                num(r["per_kind"][k]["median_delay_min"], "{:.1f}"),
                num(r["per_kind"][k]["median_delay_readings"], "{:.0f}"),
                num(r["per_kind"][k]["p90_delay_min"], "{:.1f}"),
            ),
        )
    for kind in kinds:
        row(
            f"delay from degradation onset (secondary), {kind}: median min",
            "",
            lambda r, k=kind: num(r["per_kind"][k]["median_onset_delay_min"], "{:.1f}"),
        )
    row("per-reading ROC-AUC (secondary)", "", lambda r: num(r["reading_roc_auc"], "{:.4f}"))
    lines += ["", "Goals:", ""]
    for n in names:
        g = alarms.goals(results[n])
        verdicts = [
            f"false alarms {'met' if g['false_alarms'] else 'MISSED'}",
            f"precision {'met' if g['precision'] else 'MISSED'}",
            f"every kind >= 95% within 5 min {'met' if g['recall'] else 'MISSED'}"
            + (f" (weakest: {g['weakest']})" if g["weakest"] and not g["recall"] else ""),
        ]
        lines.append(f"- **{n}**: " + "; ".join(verdicts))
    lines += [
        "",
        "Definitions: an *alarm* is a car turning anomalous; a *false alarm* one raised while "
        "the car has no active failure (a part still degrading counts as failing). A *failure* "
        "is one mode's run on one car, from its *onset* (the degradation's start: ground truth; "
        "in the CSV the first reading that shows it) to its repair. It becomes a *fault* when "
        "its part is out of spec by the car model's rule, the twin's health condition "
        "(twin/health.py: a tire below 27 psi, an accelerometer at 3 m/s² or more, vibration "
        "over 125 mV per m/s, coolant heating over 0.03 °C per ampere-second or at 130 °C, "
        "firmware below 2000), on 3 of the car's last 5 readings, the evidence the verdict asks "
        "of a model; the *fault onset* is that reading's time. A gradual failure reads healthy "
        "for a while (5 minutes into a 3-hour leak a tire has lost 0.3 psi, the sensor's "
        "noise), so the 5-minute goal is measured from the fault onset. Delay: from the fault "
        "onset to the first reading during the failure with the car in alarm (negative: "
        "alarmed while the part was still degrading); from the degradation onset as a "
        "secondary figure. Recall within a budget counts faults whose fault onset was observed "
        "(not within the car's first 5 readings) and that were observed at least that long "
        "after it (or alarmed sooner); failures repaired before they were out of spec count "
        "for precision and in 'alarmed before repair', not in recall.",
        "",
        f"Caveat: {CAVEAT}.",
    ]
    return "\n".join(lines) + "\n"


def seconds_per_epoch(size: int, batch: int) -> dict[str, float]:
    """Autoencoder epoch time on ``size`` simulated readings (features built from numpy)."""
    import keras

    from ml import models

    cars = 10_000
    steps = max(1, size // cars)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("car_id", "seq", *SENSORS)}
    for batch_ in FleetSimulator(SimulationConfig(cars=cars, seed=7)).run(steps):
        parts["car_id"].append(np.asarray(batch_.car_ids, dtype=object))
        parts["seq"].append(np.full(len(batch_), batch_.seq, np.int64))
        for name in SENSORS:
            parts[name].append(batch_.sensors[name])
    columns = {name: np.concatenate(v) for name, v in parts.items()}
    raw = ft.raw_features(columns)
    x = ft.Normalizer.fit(raw).apply(raw)
    ae = models.autoencoder(x.shape[1])
    ae.fit(x[: batch * 4], x[: batch * 4], epochs=1, batch_size=batch, verbose=0)  # warm up
    start = time.perf_counter()
    ae.fit(x, x, epochs=1, batch_size=batch, verbose=0)
    elapsed = time.perf_counter() - start
    keras.backend.clear_session()
    return {"readings": len(x), "batch_size": batch, "seconds": elapsed}


def evaluate_all(model: Any, threshold: float, args: argparse.Namespace) -> dict[str, Any]:
    steps = int(args.eval_hours * 3600_000 / INTERVAL_MS)
    results: dict[str, Any] = {}
    common = {"cars": args.eval_cars, "steps": steps, "slice_cars": args.slice_cars}
    results["(a) default fleet"] = fleet_eval.evaluate_fleet(
        model, threshold, seed=1001, first_car=1_000_001, **common
    )
    results["(a) default fleet"]["description"] = (
        f"default profile, {args.eval_cars} other cars x {args.eval_hours:g} h, seeds from 1001"
    )
    results["(b) shifted fleet"] = fleet_eval.evaluate_fleet(
        model, threshold, seed=2001, first_car=2_000_001, **common, **SHIFTED
    )
    results["(b) shifted fleet"]["description"] = (
        f"{args.eval_cars} cars x {args.eval_hours:g} h, seeds from 2001: failure mix "
        + ", ".join(f"{k} {w:.0%}" for k, w in SHIFTED["failure_mix"])
        + f"; climate +{SHIFTED['ambient_shift']:g} °C; car-to-car spread x{SHIFTED['spread']:g}; "
        f"battery range {SHIFTED['range_km'][0]:g}-{SHIFTED['range_km'][1]:g} km, charging "
        f"below {SHIFTED['charge_below'][0]:.0%}-{SHIFTED['charge_below'][1]:.0%}"
    )
    columns, interval = fleet_eval.seed_csv_columns(CSV)
    results["(c) seed CSV"] = fleet_eval.evaluate_columns(model, threshold, columns, interval)
    results["(c) seed CSV"]["description"] = (
        "the seed's car-sensor-data.csv, 100 cars x 100 readings, labelled by its rules "
        "(92% of readings failing: precision there says little)"
    )
    return results


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-cars", type=int, default=300)
    parser.add_argument("--train-hours", type=float, default=24.0)
    parser.add_argument("--train-every", type=int, default=6)
    parser.add_argument("--eval-cars", type=int, default=2000)
    parser.add_argument("--eval-hours", type=float, default=12.0)
    parser.add_argument("--slice-cars", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--supervised-epochs", type=int, default=8)
    parser.add_argument(
        "--autoencoder-only", action="store_true", help="no classifier: the autoencoder decides"
    )
    parser.add_argument("--calibration-cars", type=int, default=1000)
    parser.add_argument("--calibration-hours", type=float, default=3.0)
    parser.add_argument(
        "--budget", type=float, default=calibration.DEFAULT_BUDGET, help="per 1,000 car-hours"
    )
    parser.add_argument("--epoch-size", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="small fleets, no epoch timing")
    parser.add_argument("--no-epoch-timing", action="store_true")
    parser.add_argument(
        "--compare-percentile", action="store_true", help="also judge the 99th-percentile one"
    )
    args = parser.parse_args()
    if args.quick:
        args.train_cars, args.train_hours, args.eval_cars, args.eval_hours = 100, 6.0, 300, 3.0
        args.calibration_cars, args.calibration_hours = 300, 2.0
    return args


def main() -> None:
    args = arguments()

    started = time.perf_counter()
    train_cols = training_columns(args.train_cars, args.train_hours, args.train_every, seed=1)
    config = training.TrainConfig(
        epochs=args.epochs,
        supervised=not args.autoencoder_only,
        supervised_epochs=args.supervised_epochs,
        progress=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        card = training.train(train_cols, config, out, None, {"source": "simulator"})
        train_seconds = time.perf_counter() - t0
        model = registry.load_dir(out, card["name"], "bench")
    # Calibration on a recent "live" slice of the default fleet: other cars, no labels used.
    live = simdata.fleet_columns(
        int(args.calibration_hours * 3600_000 / INTERVAL_MS),
        cars=args.calibration_cars,
        seed=501,
        first_car=500_001,
    )
    percentile_model = copy.copy(model)
    percentile_model.card = dict(model.card)
    calibrated = calibration.calibrate_model(model, live, INTERVAL_MS, args.budget)
    del live
    calibration.apply(model, calibrated)
    card = model.card
    card["percentile_threshold"] = card["threshold_before_calibration"]
    t0 = time.perf_counter()
    results = evaluate_all(model, float(card["threshold"]), args)
    if args.compare_percentile:
        card["percentile_results"] = evaluate_all(
            percentile_model, float(card["percentile_threshold"]), args
        )
    eval_seconds = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    text = table(results, card, args)
    if args.compare_percentile:
        plain = {k: v for k, v in card.items() if k != "calibration_of_threshold"}
        plain["threshold"] = card["percentile_threshold"]
        plain["threshold_method"] = "99th percentile of healthy validation errors (before)"
        text += "\n\n" + table(card["percentile_results"], plain, args).replace(
            "# Alarms on fleets the model never saw",
            "## The same model at its percentile threshold",
        )
    (RESULTS / "ml-evaluation.md").write_text(text)
    summary = {
        "training_readings": len(train_cols["seq"]),
        "train_seconds": train_seconds,
        "evaluation_seconds": eval_seconds,
        "threshold": card["threshold"],
        "threshold_method": card.get("threshold_method"),
        "calibration": card.get("calibration_of_threshold"),
        "percentile_threshold": card.get("percentile_threshold"),
        "alarms": {
            n: {k: v for k, v in r.items() if k != "per_kind"}
            | {
                "per_kind": {
                    kind: {k: v for k, v in fig.items() if k not in alarms.DELAY_LISTS}
                    for kind, fig in r["per_kind"].items()
                }
            }
            for n, r in results.items()
        },
        "load_average_1_5_15_after": os.getloadavg(),
    }
    write_results("evaluation", summary)
    if not (args.quick or args.no_epoch_timing):
        epochs = {f"batch_{b}": seconds_per_epoch(args.epoch_size, b) for b in (256, 1024)}
        epochs["load_average_1_5_15_after"] = os.getloadavg()  # type: ignore[assignment]
        write_results("training_epoch", epochs)
    print(json.dumps(summary, indent=1, default=float))
    print(f"done in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
