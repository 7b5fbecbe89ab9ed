"""Train both models on a slice of readings, evaluate on a held-out slice, write the artifacts.

``train`` takes columns (from Kafka, the lake or the simulator: the same feature pipeline) and
writes everything a registry version holds into one directory: the Keras models, the
normalization, the threshold, metrics, plots, TensorBoard logs and ``model.json``.
"""

from __future__ import annotations

import json
import subprocess
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fleet.logs import get_logger
from ml import evaluate as ev
from ml import faults
from ml import features as ft

log = get_logger("ml.train")

Columns = Mapping[str, npt.NDArray[Any]]
SCORE = "mean squared reconstruction error over normalized features"


@dataclass
class TrainConfig:
    name: str = "fleet-autoencoder"
    epochs: int = 15
    batch_size: int = 256
    hidden: int = 32
    bottleneck: int = 8
    validation_share: float = 0.2
    threshold_method: Literal["percentile", "f1"] = "percentile"
    percentile: float = 99.0  # of healthy validation errors
    supervised: bool = True
    supervised_epochs: int = 8
    window: int = 8
    #: Which score decides live when a classifier is trained: "combined" (the larger of the
    #: two models' scores, each over its own threshold) or "autoencoder" alone.
    decision: Literal["autoencoder", "combined"] = "combined"
    seed: int = 0
    progress: bool = True


def code_version() -> str:
    """``git describe`` of the working tree, else the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
            check=True,
        )
        return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"fleet-twin=={version('fleet-twin')}"


def validation_cars(car_ids: npt.NDArray[Any], share: float) -> npt.NDArray[np.bool_]:
    """A stable split by car: the same car is always on the same side."""
    buckets = np.array([zlib.crc32(str(c).encode()) % 1000 for c in car_ids])
    return buckets < int(share * 1000)


class ProgressCallback:
    """Keras callback drawing a rich progress bar over epochs (built lazily: keras import)."""

    @staticmethod
    def make(total: int, what: str, enabled: bool) -> Any:
        import keras
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        class _Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs: Any = None) -> None:
                self.progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total} {task.fields[loss]}"),
                    TimeElapsedColumn(),
                    disable=not enabled,
                    transient=False,
                )
                self.progress.start()
                self.task = self.progress.add_task(what, total=total, loss="")

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                shown = " ".join(f"{k}={v:.4g}" for k, v in (logs or {}).items())
                self.progress.update(self.task, advance=1, loss=shown)

            def on_train_end(self, logs: Any = None) -> None:
                self.progress.stop()

        return _Callback()


class Calibration:
    """Maps a model's score to the share of healthy validation readings below it, so two
    models' scores can be combined (max) at one false-alarm rate."""

    GRID = np.linspace(0.0, 1.0, 2001)

    def __init__(self, quantiles: npt.NDArray[np.float64]) -> None:
        self.quantiles = quantiles

    @classmethod
    def fit(cls, healthy_scores: npt.NDArray[Any]) -> Calibration:
        return cls(np.quantile(np.asarray(healthy_scores, float), cls.GRID))

    def __call__(self, scores: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        q, unique = np.unique(self.quantiles, return_index=True)
        return np.interp(np.asarray(scores, float), q, self.GRID[unique])


def combined_decision(autoencoder_scale: float, classifier_scale: float) -> dict[str, Any]:
    """The card's ``decision``: score = max(autoencoder / its scale, classifier / its scale)."""
    return {
        "model": "combined",
        "score": "max(autoencoder error / autoencoder_scale, classifier score / classifier_scale)",
        "autoencoder_scale": float(autoencoder_scale),
        "classifier_scale": float(classifier_scale),
    }


def train(
    columns: Columns,
    config: TrainConfig,
    out_dir: Path,
    eval_columns: Columns | None = None,
    data_range: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, choose thresholds, evaluate, and write every artifact into ``out_dir``."""
    import keras

    from ml import models

    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    labelled = ft.has_labels(columns)
    truth = ft.labels(columns) if labelled else np.zeros(len(columns["seq"]), bool)
    in_validation = validation_cars(columns["car_id"], config.validation_share)
    raw = ft.raw_features(columns)
    train_healthy = ~in_validation & ~truth
    if train_healthy.sum() < 10:
        raise ValueError("too few healthy training readings to train an autoencoder")
    normalizer = ft.Normalizer.fit(raw[train_healthy])
    x = normalizer.apply(raw)

    # Model 1: the autoencoder, on readings believed healthy.
    ae = models.autoencoder(x.shape[1], config.hidden, config.bottleneck)
    logs = out_dir / "logs"
    ae.fit(
        x[train_healthy],
        x[train_healthy],
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[
            keras.callbacks.TensorBoard(str(logs / "autoencoder")),
            ProgressCallback.make(config.epochs, "autoencoder", config.progress),
        ],
    )
    val_errors = models.reconstruction_errors(ae, x[in_validation]).mean(axis=1)
    val_truth = truth[in_validation]
    if config.threshold_method == "f1" and labelled and val_truth.any() and (~val_truth).any():
        threshold = ev.best_f1_threshold(val_errors, val_truth)
    else:
        healthy_val = val_errors[~val_truth] if len(val_errors[~val_truth]) else val_errors
        threshold = float(np.percentile(healthy_val, config.percentile))
    ae.save(out_dir / "autoencoder.keras")
    ae_calibration = Calibration.fit(val_errors[~val_truth])
    card: dict[str, Any] = {
        "name": config.name,
        "kind": "autoencoder",
        "score": SCORE,
        "threshold": threshold,
        "threshold_method": config.threshold_method if labelled else "percentile",
        "features": list(ft.FEATURES),
        "config": asdict(config),
        "training": {
            "readings": len(x),
            "healthy_readings_used": int(train_healthy.sum()),
            "validation_readings": int(in_validation.sum()),
            "labelled": labelled,
            "range": dict(data_range or {}),
        },
        "code_version": code_version(),
        "files": ["autoencoder.keras", "normalization.json", "model.json"],
        "calibration": {"autoencoder": ae_calibration.quantiles.tolist()},
    }
    (out_dir / "normalization.json").write_text(json.dumps(normalizer.to_dict(), indent=1))

    # Model 2: the supervised classifier of one reading (needs labels).
    classifier = None
    if config.supervised and labelled and truth.any() and (~truth).any():
        # A part degrading but still in spec reads as a healthy one: taught as failing, the
        # classifier learned to doubt healthy readings too (its healthy tail, and so its
        # calibrated threshold, rose above early faults). It learns healthy vs out of spec.
        train_rows = ~in_validation & ~faults.in_spec_failing(columns, truth)
        classifier = fit_classifier(x[train_rows], truth[train_rows], config, logs / "classifier")
        val_cl = models.classifier_scores(classifier, x[in_validation])
        healthy_cl = val_cl[~val_truth] if (~val_truth).any() else val_cl
        cl_scale = float(np.percentile(healthy_cl, config.percentile))
        card["classifier"] = {
            "kind": "dense classifier of one reading's features",
            "score": "-log(1 - p), p the probability that a failure is active",
            "labels": "healthy readings vs failing ones out of spec by the health rules "
            "(ml/faults.py); failing readings still in spec left out",
            "left_out_in_spec": int((~in_validation).sum() - train_rows.sum()),
            "threshold": cl_scale,
            "threshold_method": f"{config.percentile:g}th percentile of healthy validation",
        }
        card["calibration"]["classifier"] = Calibration.fit(healthy_cl).quantiles.tolist()
        classifier.save(out_dir / "classifier.keras")
        card["files"].append("classifier.keras")
        if config.decision == "combined":
            card["decision"] = combined_decision(threshold, cl_scale)
            card["autoencoder_threshold"] = threshold
            card["threshold"] = 1.0
            card["threshold_method"] = (
                f"each model at its {config.percentile:g}th percentile of healthy validation"
            )

    if eval_columns is not None and ft.has_labels(eval_columns):
        card["evaluation"] = evaluate_models(ae, classifier, normalizer, card, eval_columns)
        plot_evaluation(card["evaluation"], out_dir)
        card["files"] += ["roc.png", "scores.png"]
    (out_dir / "model.json").write_text(json.dumps(card, indent=1, default=float))
    return card


def fit_classifier(
    x: npt.NDArray[np.float32], truth: npt.NDArray[np.bool_], config: TrainConfig, logs: Path
) -> Any:
    """Model 2: a dense classifier of one reading's features. The classes weigh alike: with a
    few percent failing, a reading just out of spec (a tire at 26 psi; most leaks spend hours
    at 20-24) was scored p ~ 0 and a slow leak went unseen for a quarter of an hour after its
    fault onset."""
    import keras

    from ml import models

    classifier = models.reading_classifier(x.shape[1])
    positives = max(1, int(truth.sum()))
    classifier.fit(
        x,
        truth.astype(np.float32),
        epochs=config.supervised_epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        class_weight={0: 1.0, 1: float(len(truth) - positives) / positives},
        callbacks=[
            keras.callbacks.TensorBoard(str(logs)),
            ProgressCallback.make(config.supervised_epochs, "classifier", config.progress),
        ],
    )
    return classifier


def score_all(
    ae: Any,
    classifier: Any,
    normalizer: ft.Normalizer,
    card: Mapping[str, Any],
    columns: Columns,
) -> dict[str, npt.NDArray[Any]]:
    """Scores of every model on ``columns`` (in their original order); "combined" is the
    live scorer's score (registry.LoadedModel.parts)."""
    from ml import registry

    model = registry.LoadedModel(
        card["name"], "evaluation", ae, normalizer, float(card["threshold"]), dict(card), classifier
    )
    return model.parts(ft.transform(columns, normalizer))


def evaluate_models(
    ae: Any,
    classifier: Any,
    normalizer: ft.Normalizer,
    card: Mapping[str, Any],
    columns: Columns,
) -> dict[str, Any]:
    """Every model's figures on a labelled held-out slice."""
    truth = ft.labels(columns)
    modes = ft.mode_matrix(columns)
    scores = score_all(ae, classifier, normalizer, card, columns)
    thresholds = {"autoencoder": card.get("autoencoder_threshold", card["threshold"])}
    if classifier is not None:
        thresholds["classifier"] = card["classifier"]["threshold"]
    if "combined" in scores:
        thresholds["combined"] = card["threshold"]
    result: dict[str, Any] = {
        "readings": len(truth),
        "cars": len(np.unique(columns["car_id"].astype(str))),
        "failing_share": float(truth.mean()),
    }
    for model, score in scores.items():
        if model == "errors":
            continue
        result[model] = ev.evaluate(
            score,
            thresholds[model],
            truth=truth,
            modes=modes,
            car_ids=columns["car_id"],
            seq=columns["seq"],
        )
        result[model]["roc"] = [c.tolist() for c in ev.roc_curve(score, truth, 100)]
        healthy, failing = score[~truth], score[truth]
        result[model]["histogram"] = _histograms(healthy, failing)
    return result


def _histograms(healthy: npt.NDArray[Any], failing: npt.NDArray[Any]) -> dict[str, Any]:
    both = np.r_[healthy, failing]
    edges = np.quantile(both, np.linspace(0, 1, 41)) if len(both) else np.zeros(2)
    edges = np.unique(edges)
    return {
        "edges": edges.tolist(),
        "healthy": np.histogram(healthy, edges)[0].tolist(),
        "failing": np.histogram(failing, edges)[0].tolist(),
    }


def plot_evaluation(evaluation: Mapping[str, Any], out_dir: Path) -> None:
    """ROC curves and score distributions as PNGs (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models_ = [m for m in ("autoencoder", "classifier", "combined") if m in evaluation]
    fig, ax = plt.subplots(figsize=(5, 5))
    for m in models_:
        fpr, tpr = evaluation[m]["roc"]
        ax.plot(fpr, tpr, label=f"{m} (AUC {evaluation[m]['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false-alarm rate", ylabel="recall", title="ROC on the held-out fleet")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(models_), figsize=(5 * len(models_), 4), squeeze=False)
    for ax, m in zip(axes[0], models_, strict=True):
        hist = evaluation[m]["histogram"]
        edges = np.asarray(hist["edges"])
        if len(edges) > 1:
            ax.stairs(hist["healthy"], edges, label="healthy", fill=True, alpha=0.5)
            ax.stairs(hist["failing"], edges, label="failing", fill=True, alpha=0.5)
            ax.axvline(evaluation[m]["threshold"], color="black", linestyle="--", label="threshold")
        ax.set_xscale("symlog")
        ax.set(title=f"{m} scores", xlabel="score", ylabel="readings")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "scores.png", dpi=100)
    plt.close(fig)
