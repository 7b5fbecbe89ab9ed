"""The two Keras models and their scoring functions (vectorized over batches of readings).

Model 1 (unsupervised): a dense autoencoder over normalized features, trained on healthy
readings; score = mean squared reconstruction error; per-feature errors name the sensors that
drive the score. Model 2 (supervised): a dense classifier of one reading's features (which
include the car's previous reading's coolant) that predicts whether any failure mode is active;
its score is ``-log(1 - p)`` computed from the logit (it keeps growing where p rounds to 1),
so the live scorer needs no more per-car state than the autoencoder. (The 1-D convolution over
per-car windows, ``window_classifier``, stays for offline comparison: live, it would need each
car's last readings.)
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float32]


def autoencoder(features: int, hidden: int = 32, bottleneck: int = 8) -> keras.Model:
    inputs = keras.Input(shape=(features,), name="features")
    x = keras.layers.Dense(hidden, activation="relu")(inputs)
    x = keras.layers.Dense(bottleneck, activation="relu", name="bottleneck")(x)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    outputs = keras.layers.Dense(features, name="reconstruction")(x)
    model = keras.Model(inputs, outputs, name="autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def window_classifier(window: int, channels: int, filters: int = 32) -> keras.Model:
    inputs = keras.Input(shape=(window, channels), name="windows")
    x = keras.layers.Conv1D(filters, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv1D(filters, 3, padding="same", activation="relu")(x)
    last = keras.layers.Flatten()(keras.layers.Cropping1D((window - 1, 0), name="last_step")(x))
    pooled = keras.layers.GlobalMaxPooling1D()(x)
    x = keras.layers.Concatenate()([last, pooled])
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="failing")(x)
    model = keras.Model(inputs, outputs, name="window_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


def reading_classifier(features: int, hidden: int = 64, noise: float = 0.2) -> keras.Model:
    """Dense classifier of one reading; outputs a logit. Gaussian input noise (training only)
    keeps its boundary away from the edge of what healthy training cars showed."""
    inputs = keras.Input(shape=(features,), name="features")
    x = keras.layers.GaussianNoise(noise)(inputs)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    outputs = keras.layers.Dense(1, name="logit")(x)
    model = keras.Model(inputs, outputs, name="reading_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    return model


def classifier_scores(model: Any, features: FloatMatrix) -> npt.NDArray[np.float64]:
    """``-log(1 - p)`` of the failing class per reading, from the logit: softplus(logit)."""
    if len(features) == 0:
        return np.zeros(0)
    logit = predict(model, features).reshape(-1).astype(np.float64)
    return np.logaddexp(0.0, logit)


def reconstruction_errors(model: Any, features: FloatMatrix, batch: int = 8192) -> FloatMatrix:
    """Per-feature squared reconstruction errors (readings x features)."""
    if len(features) == 0:
        return np.zeros((0, features.shape[1]), np.float32)
    reconstructed = predict(model, features, batch)
    return np.square(features - reconstructed).astype(np.float32)


def predict(model: Any, inputs: npt.NDArray[np.float32], batch: int = 8192) -> FloatMatrix:
    """Model output in fixed-size chunks without Keras' per-call overhead of ``predict``."""
    out = [
        np.asarray(model(inputs[i : i + batch], training=False))
        for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(out).astype(np.float32)


def top_contributors(
    errors: FloatMatrix, names: tuple[str, ...], k: int = 3
) -> list[list[tuple[str, float]]]:
    """Per reading, the ``k`` features with the largest reconstruction error, largest first."""
    k = min(k, errors.shape[1])
    top = np.argsort(-errors, axis=1)[:, :k]
    values = np.take_along_axis(errors, top, axis=1)
    return [
        [(names[j], float(v)) for j, v in zip(row, vals, strict=True)]
        for row, vals in zip(top.tolist(), values.tolist(), strict=True)
    ]
