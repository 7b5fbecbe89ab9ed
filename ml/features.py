"""The feature pipeline: the same pure transform for Kafka records, lake frames and live scoring.

Input is anything indexable by column name (a pandas DataFrame, or a dict of numpy arrays built
from decoded telemetry records). Output is a float32 matrix, one row per reading, with the 18
sensors of the contract plus a few engineered columns that make failure modes visible in a
single reading. Normalization statistics are learned on training data and saved with the model
(``to_dict``/``from_dict``), so training, evaluation and scoring see identical features.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.contract import FAILURE_MODES, SENSORS, WHEELS

FloatMatrix = npt.NDArray[np.float32]
Columns = Mapping[str, Any]  # DataFrame or dict of arrays

#: Engineered columns, each a pure function of one reading's sensors.
#: - vibration_per_speed: the drive shaft's signature (100 healthy, 150 degraded); neutral at rest.
#: - accelerometer_spread_<w>: a wheel against the car's other wheels; bumps lift all four
#:   together, a broken shock absorber lifts one.
#: - coolant_rise, coolant_rise_per_amp: the coolant's change since the car's previous reading
#:   (consecutive seq), raw and per ampere drawn. A cooling system that has failed heats several
#:   times faster per ampere long before the temperature itself leaves the healthy range.
#:   Without a previous reading (a car's first, or the first after a scorer restart) both are 0.
DERIVED: tuple[str, ...] = (
    "vibration_per_speed",
    *(f"accelerometer_spread_{w}" for w in WHEELS),
    "coolant_rise",
    "coolant_rise_per_amp",
)
#: Column holding each reading's previous coolant temperature (NaN: unknown); computed from the
#: columns themselves when absent (training, evaluation), from the scorer's carry when live.
PREVIOUS_COOLANT = "previous_coolant_temp"
#: Per car: (seq, coolant, previous coolant) of the newest reading seen, carried between batches.
Carry = dict[str, tuple[int, float, float]]
FEATURES: tuple[str, ...] = (*SENSORS, *DERIVED)
#: Normalized features are clipped here: a firmware of 1000 against a constant 2000 would
#: otherwise be a z-score of millions and swamp everything else.
CLIP = 10.0
MIN_SPEED = 0.5  # m/s; below this the vibration/speed ratio is noise


def raw_features(columns: Columns) -> FloatMatrix:
    """The unnormalized feature matrix (readings x FEATURES)."""
    sensors = np.column_stack(
        [np.asarray(columns[name], dtype=np.float64) for name in SENSORS]
    ).reshape(-1, len(SENSORS))
    index = {name: i for i, name in enumerate(SENSORS)}
    speed = sensors[:, index["speed"]]
    vibration = sensors[:, index["engine_vibration_amplitude"]]
    moving = speed > MIN_SPEED
    ratio = np.where(moving, vibration / np.where(moving, speed, 1.0), 100.0)
    accel = sensors[:, [index[f"accelerometer_{w}_value"] for w in WHEELS]]
    spread = accel - np.median(accel, axis=1, keepdims=True)
    previous = (
        np.asarray(columns[PREVIOUS_COOLANT], np.float64)
        if PREVIOUS_COOLANT in columns
        else previous_coolant(columns)[0]
    )
    coolant = sensors[:, index["coolant_temp"]]
    rise = np.nan_to_num(coolant - previous, nan=0.0, posinf=0.0, neginf=0.0)
    per_amp = rise / np.maximum(np.abs(sensors[:, index["current_draw"]]), 1.0)
    return np.column_stack([sensors, ratio, spread, rise, per_amp]).astype(np.float32)


def previous_coolant(
    columns: Columns, carry: Carry | None = None
) -> tuple[npt.NDArray[np.float64], Carry]:
    """Each reading's previous coolant temperature on the same car (NaN where unknown).

    "Previous" means seq - 1 of the same car, found in ``columns`` or, for a car's first
    reading here, in ``carry`` (the scorer's memory of earlier batches). Returns the values and
    the carry updated with each car's newest reading (``carry`` itself is left unchanged).
    """
    cars = np.asarray(columns["car_id"]).astype(str)
    seq = np.asarray(columns["seq"], np.int64)
    coolant = np.asarray(columns["coolant_temp"], np.float64)
    n = len(seq)
    out = np.full(n, np.nan)
    new_carry: Carry = dict(carry or {})
    if n == 0:
        return out, new_carry
    order = np.lexsort((seq, cars))
    c, s, v = cars[order], seq[order], coolant[order]
    prev = np.full(n, np.nan)
    same_car = c[1:] == c[:-1]
    follows = same_car & (s[1:] == s[:-1] + 1)
    prev[1:][follows] = v[:-1][follows]
    firsts = np.flatnonzero(np.r_[True, ~same_car])
    lasts = np.r_[firsts[1:] - 1, n - 1]
    if carry:
        for i in firsts.tolist():
            known = carry.get(c[i])
            if known is not None:
                if known[0] == s[i] - 1:
                    prev[i] = known[1]
                elif known[0] == s[i]:  # the newest reading again (redelivery)
                    prev[i] = known[2]
    # A reading delivered twice gets its twin's previous value.
    twin = same_car & (s[1:] == s[:-1])
    prev[1:][twin] = prev[:-1][twin]
    for i in lasts.tolist():
        known = new_carry.get(c[i])
        if known is None or known[0] < s[i]:
            new_carry[c[i]] = (int(s[i]), float(v[i]), float(prev[i]))
    out[order] = prev
    return out, new_carry


@dataclass(frozen=True)
class Normalizer:
    """Per-feature centre and scale learned from training data."""

    names: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]

    @classmethod
    def fit(cls, raw: FloatMatrix, names: tuple[str, ...] = FEATURES) -> Normalizer:
        if len(raw) == 0:
            raise ValueError("cannot learn normalization from zero readings")
        values = raw.astype(np.float64)
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        # A feature constant in training (firmware on a healthy fleet) gets a unit scale, so
        # any change is still visible (and then clipped).
        scale = np.where(std > 1e-6, std, 1.0)
        return cls(names, mean, scale)

    def apply(self, raw: FloatMatrix) -> FloatMatrix:
        z = (raw.astype(np.float64) - self.mean) / self.scale
        return np.clip(z, -CLIP, CLIP).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.names),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "clip": CLIP,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalizer:
        names = tuple(data["features"])
        if names != FEATURES:
            raise ValueError(
                f"model was trained on features {names}, this code computes {FEATURES}"
            )
        return cls(names, np.asarray(data["mean"], float), np.asarray(data["scale"], float))


def transform(columns: Columns, normalizer: Normalizer) -> FloatMatrix:
    """Sensors -> normalized features: the one path every caller uses."""
    return normalizer.apply(raw_features(columns))


def columns_from_records(records: Iterable[Mapping[str, Any]]) -> dict[str, npt.NDArray[Any]]:
    """Decoded telemetry records -> columns (sensors, meta, labels when present)."""
    rows = list(records)
    columns: dict[str, npt.NDArray[Any]] = {
        "car_id": np.array([r["car_id"] for r in rows], dtype=object),
        "event_time": np.fromiter((r["event_time"] for r in rows), np.int64, len(rows)),
        "seq": np.fromiter((r["seq"] for r in rows), np.int64, len(rows)),
    }
    for name in SENSORS:
        columns[name] = np.fromiter((r[name] for r in rows), np.float64, len(rows))
    columns["failure_occurred"] = np.array([r.get("failure_occurred") for r in rows], dtype=object)
    modes = np.empty(len(rows), dtype=object)  # filled one by one: tuples must stay tuples
    for i, r in enumerate(rows):
        modes[i] = tuple(r.get("failure_modes") or ())
    columns["failure_modes"] = modes
    return columns


def has_labels(columns: Columns) -> bool:
    labels = columns["failure_occurred"]
    return len(labels) > 0 and all(v is not None for v in labels)


def labels(columns: Columns) -> npt.NDArray[np.bool_]:
    """Ground truth per reading: is any failure mode active."""
    return np.array([bool(v) for v in columns["failure_occurred"]], dtype=bool)


def mode_matrix(columns: Columns) -> npt.NDArray[np.bool_]:
    """Readings x FAILURE_MODES: which modes are active on each reading."""
    index = {mode: j for j, mode in enumerate(FAILURE_MODES)}
    modes = columns["failure_modes"]
    out = np.zeros((len(modes), len(FAILURE_MODES)), dtype=bool)
    for i, active in enumerate(modes):
        for mode in active or ():
            out[i, index[mode]] = True
    return out


def car_order(columns: Columns) -> npt.NDArray[np.intp]:
    """Indices that sort readings by car, then sequence (stable)."""
    cars = np.asarray(columns["car_id"]).astype(str)
    return np.lexsort((np.asarray(columns["seq"]), cars))


def window_indices(
    car_ids: npt.NDArray[Any], order: npt.NDArray[np.intp], window: int
) -> npt.NDArray[np.intp]:
    """For each reading (in ``order``), the indices of its car's last ``window`` readings.

    The result has shape (readings, window), oldest first, aligned with ``order``; a car's first
    readings repeat its first reading where there is no history yet.
    """
    cars = np.asarray(car_ids).astype(str)[order]
    n = len(order)
    position = np.arange(n)
    starts = np.r_[True, cars[1:] != cars[:-1]] if n else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(starts, position, 0)) if n else position
    lags = np.arange(window - 1, -1, -1)
    idx = np.maximum(position[:, None] - lags[None, :], first[:, None])
    return order[idx]


def windows(
    features: FloatMatrix,
    car_ids: npt.NDArray[Any],
    order: npt.NDArray[np.intp],
    window: int,
    raw: FloatMatrix | None = None,
) -> npt.NDArray[np.float32]:
    """Per-car windows of normalized features: (readings, window, channels), aligned with order.

    Channels: the features, their difference to the previous reading (rising coolant shows),
    and, given the raw features, the coolant's rise per ampere drawn: a cooling system that
    has stopped working heats faster per ampere than a healthy one.
    """
    idx = window_indices(car_ids, order, window)
    stacked = features[idx]
    delta = np.diff(stacked, axis=1, prepend=stacked[:, :1, :])
    parts = [stacked, delta]
    if raw is not None:
        coolant = raw[:, FEATURES.index("coolant_temp")][idx]
        current = raw[:, FEATURES.index("current_draw")][idx]
        rise = np.diff(coolant, axis=1, prepend=coolant[:, :1])
        per_amp = np.clip(rise / np.maximum(np.abs(current), 1.0), -5.0, 5.0)
        parts.append(per_amp[:, :, None])
    return np.concatenate(parts, axis=2).astype(np.float32)
