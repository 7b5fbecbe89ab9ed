"""The model registry: versioned models in the GCS bucket, promotions on a compacted topic.

Layout: ``gs://<bucket>/<prefix>/<name>/<version>/`` holds the files ``train`` wrote
(``model.json``, ``normalization.json``, ``autoencoder.keras``, plots, TensorBoard logs).
A version is immutable once uploaded; ``model.json`` is uploaded last, so a version without it
is incomplete and not listed. Promotion publishes a ``ModelAnnouncement`` keyed by model name
to the compacted models topic: the latest promotion per model survives compaction.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fleet import clients
from fleet.avro import model_announcement_codec
from fleet.logs import get_logger
from fleet.settings import Settings
from ml.features import Normalizer

log = get_logger("ml.registry")
CARD = "model.json"


class RegistryError(RuntimeError):
    pass


def new_version() -> str:
    """Versions sort by creation time: ``v20261125T134501Z``-style, with milliseconds."""
    now = datetime.now(UTC)
    return now.strftime("v%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"


def version_prefix(settings: Settings, name: str, version: str) -> str:
    return f"{settings.ml.registry_prefix.strip('/')}/{name}/{version}/"


def artifact_uri(settings: Settings, name: str, version: str) -> str:
    return f"gs://{settings.gcs.bucket}/{version_prefix(settings, name, version)}"


def upload(settings: Settings, local_dir: Path, name: str, version: str) -> str:
    """Upload every file under ``local_dir``; ``model.json`` last (it marks completeness)."""
    bucket = clients.gcs_bucket(settings)
    prefix = version_prefix(settings, name, version)
    if bucket.blob(prefix + CARD).exists():
        raise RegistryError(f"{name} {version} already exists in the registry")
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == CARD)
    for path in files:
        bucket.blob(prefix + path.relative_to(local_dir).as_posix()).upload_from_filename(str(path))
    log.info("uploaded model", name=name, version=version, files=len(files))
    return artifact_uri(settings, name, version)


def card(settings: Settings, name: str, version: str) -> dict[str, Any]:
    blob = clients.gcs_bucket(settings).blob(version_prefix(settings, name, version) + CARD)
    if not blob.exists():
        raise RegistryError(f"no model {name} version {version} in the registry")
    data: dict[str, Any] = json.loads(blob.download_as_bytes())
    return data


def list_models(settings: Settings) -> list[dict[str, Any]]:
    """Every complete version: name, version, threshold, created, metrics summary."""
    root = settings.ml.registry_prefix.strip("/") + "/"
    bucket = clients.gcs_bucket(settings)
    out = []
    for blob in clients.gcs_client(settings).list_blobs(bucket, prefix=root):
        parts = blob.name[len(root) :].split("/")
        if len(parts) == 3 and parts[2] == CARD:
            data = json.loads(blob.download_as_bytes())
            evaluation = data.get("evaluation", {}).get("autoencoder", {})
            out.append(
                {
                    "name": parts[0],
                    "version": parts[1],
                    "threshold": data["threshold"],
                    "readings": data["training"]["readings"],
                    "roc_auc": evaluation.get("roc_auc"),
                    "code_version": data.get("code_version", ""),
                }
            )
    return sorted(out, key=lambda m: (m["name"], m["version"]))


def download(settings: Settings, name: str, version: str, dest: Path) -> Path:
    """Download a version's files into ``dest``."""
    prefix = version_prefix(settings, name, version)
    bucket = clients.gcs_bucket(settings)
    count = 0
    for blob in clients.gcs_client(settings).list_blobs(bucket, prefix=prefix):
        target = dest / blob.name[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
        count += 1
    if not (dest / CARD).is_file():
        raise RegistryError(f"no model {name} version {version} in the registry")
    log.info("downloaded model", name=name, version=version, files=count)
    return dest


@dataclass
class LoadedModel:
    """What the scorer needs of a version, loaded in memory.

    ``scores`` is the one scoring path of the live scorer and of every evaluation: the
    autoencoder's mean squared error, or, when the card's ``decision`` is "combined", the
    larger of the autoencoder's error and the classifier's score, each divided by its scale
    (so 1.0 on either is that model's own threshold)."""

    name: str
    version: str
    autoencoder: Any
    normalizer: Normalizer
    threshold: float
    card: dict[str, Any]
    classifier: Any = None

    @property
    def decision(self) -> dict[str, Any] | None:
        decision = self.card.get("decision")
        if decision and decision.get("model") == "combined" and self.classifier is not None:
            return dict(decision)
        return None

    def parts(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Each model's score per reading, "combined" when the card says so, and "errors"
        (the autoencoder's per-feature errors)."""
        from ml.models import classifier_scores, reconstruction_errors

        errors = reconstruction_errors(self.autoencoder, features)
        out = {"autoencoder": errors.mean(axis=1).astype(np.float64), "errors": errors}
        if self.classifier is not None:
            out["classifier"] = classifier_scores(self.classifier, features)
        decision = self.decision
        if decision is not None:
            out["combined"] = np.maximum(
                out["autoencoder"] / decision["autoencoder_scale"],
                out["classifier"] / decision["classifier_scale"],
            )
        return out

    def scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the deciding score per reading, the autoencoder's per-feature errors)."""
        parts = self.parts(features)
        key = "combined" if "combined" in parts else "autoencoder"
        return parts[key], parts["errors"]


def load_dir(directory: Path, name: str, version: str) -> LoadedModel:
    import keras

    data = json.loads((directory / CARD).read_text())
    normalizer = Normalizer.from_dict(json.loads((directory / "normalization.json").read_text()))
    ae = keras.saving.load_model(directory / "autoencoder.keras", compile=False)
    classifier = None
    if (data.get("decision") or {}).get("model") == "combined":
        classifier = keras.saving.load_model(directory / "classifier.keras", compile=False)
    return LoadedModel(name, version, ae, normalizer, float(data["threshold"]), data, classifier)


def load(settings: Settings, name: str, version: str) -> LoadedModel:
    """Download to a temporary folder and load (the Keras file must be on disk to load)."""
    with tempfile.TemporaryDirectory(prefix="fleet-model-") as tmp:
        return load_dir(download(settings, name, version, Path(tmp)), name, version)


def announcement(settings: Settings, name: str, version: str) -> dict[str, Any]:
    data = card(settings, name, version)
    return {
        "model_name": name,
        "model_version": version,
        "artifact_uri": artifact_uri(settings, name, version),
        "threshold": float(data["threshold"]),
        "feature_names": list(data["features"]),
        "promoted_at": int(time.time() * 1000),
        "code_version": data.get("code_version", ""),
    }


def write_card(settings: Settings, name: str, version: str, data: dict[str, Any]) -> None:
    """Replace a version's card (its files stay as they are): a calibration on promotion."""
    blob = clients.gcs_bucket(settings).blob(version_prefix(settings, name, version) + CARD)
    blob.upload_from_string(json.dumps(data, indent=1, default=float))


def calibrate_on_live(settings: Settings, name: str, version: str) -> dict[str, Any] | None:
    """Calibrate the version's threshold to ``ml.false_alarms_per_1000_car_hours`` on the live
    fleet's newest ``ml.calibration_hours`` of telemetry in Kafka and record it in its card.
    None (the card's threshold stays) when there is no telemetry to calibrate on."""
    from ml import calibration
    from ml.kafka_source import ShortReadError, read_slice

    try:
        columns, info = read_slice(
            settings,
            stream_timeout_ms=settings.ml.stream_timeout_ms,
            recent_hours=settings.ml.calibration_hours,
        )
    except ShortReadError as exc:
        log.warning("no live telemetry to calibrate on; threshold kept", error=str(exc))
        return None
    recent, interval = calibration.recent_by_car(columns, settings.ml.calibration_hours)
    model = load(settings, name, version)
    budget = settings.ml.false_alarms_per_1000_car_hours
    result = calibration.calibrate_model(model, recent, interval, budget)
    result["data"] = {
        "source": "kafka",
        "topic": info.topic,
        "first_event_ms": int(recent["event_time"].min()),
        "last_event_ms": int(recent["event_time"].max()),
        "interval_ms": interval,
    }
    calibration.apply(model, result)
    write_card(settings, name, version, model.card)
    log.info("calibrated on promotion", name=name, version=version, threshold=model.threshold)
    return model.card


def promote(settings: Settings, name: str, version: str, calibrate: bool = False) -> dict[str, Any]:
    """Publish the announcement keyed by model name; returns it once the broker has it. With
    ``calibrate``, the threshold is first calibrated on the live fleet (calibrate_on_live)."""
    if calibrate:
        calibrate_on_live(settings, name, version)
    record = announcement(settings, name, version)
    producer = clients.kafka_producer(settings)
    errors: list[str] = []
    producer.produce(
        settings.topics.models,
        key=name.encode(),
        value=model_announcement_codec().encode(record),
        on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
    )
    if producer.flush(30) or errors:
        raise RegistryError(f"announcement of {name} {version} not delivered: {errors}")
    log.info("promoted", name=name, version=version)
    return record
