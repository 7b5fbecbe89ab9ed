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

#: Engineered columns, each a function of one reading's sensors (no per-car state: the live
#: scorer scores a reading the same after a restart). Each compares a sensor with what the
#: same car shows at the same moment, so a car's own baseline, the climate and a warm-up do
#: not look like a failure:
#: - vibration_per_speed: the drive shaft's signature (100 healthy, 150 degraded); neutral at rest.
#: - accelerometer_spread_<w>: a wheel against the car's other wheels; bumps lift all four
#:   together, a broken shock absorber lifts one.
#: - tire_spread_<w>: a tire's pressure against the median of the car's four; a leak takes one
#:   tire down while the others stay (a cold morning lowers all four).
#: - coolant_excess: the coolant above where a healthy cooling system holds it at this
#:   moment: its set point (rising with the intake air's temperature, the ambient's proxy) plus
#:   what the radiator leaves of the heat the current and speed make. A warming-up car is
#:   below it (floored at COLD: warm-ups all look alike), a failing cooling system climbs
#:   above it long before 105 °C.
#:   (The coolant's rise since the previous reading, per ampere, was a feature before: healthy
#:   cars warming up after a stop or a repair heat as fast per ampere as a failing system
#:   early on, and the model read every warm-up as overheating.)
DERIVED: tuple[str, ...] = (
    "vibration_per_speed",
    *(f"accelerometer_spread_{w}" for w in WHEELS),
    *(f"tire_spread_{w}" for w in WHEELS),
    "coolant_excess",
)
FEATURES: tuple[str, ...] = (*SENSORS, *DERIVED)
#: Sensors that say how and where a car is driven, not whether it is failing: the models see
#: them only through the engineered columns (their normalized value is 0). A model that learned
#: their training range would read a hotter climate, another driving style or a shorter battery
#: range as a failure.
CONTEXT: tuple[str, ...] = (
    "intake_air_temp",
    "intake_air_flow_speed",
    "battery_percentage",
    "battery_voltage",
    "current_draw",
    "speed",
    "throttle_pos",
    "engine_vibration_amplitude",  # speed times the shaft's signature: seen as vibration_per_speed
)
_CONTEXT_INDEX = [FEATURES.index(name) for name in CONTEXT]
#: Normalized features are clipped here: a firmware of 1000 against a constant 2000 would
#: otherwise be a z-score of millions and swamp everything else.
CLIP = 10.0
MIN_SPEED = 0.5  # m/s; below this the vibration/speed ratio is noise
#: A healthy cooling system's equilibrium (°C): a set point of SET_POINT at INTAKE_REF °C
#: intake air, SET_POINT_PER_INTAKE higher per °C more, plus HOLD times the heat a reading's
#: interval makes: HEAT_PER_AMP per ampere and HEAT_PER_SPEED per m/s (a radiator removing
#: 30% of the excess each 10 s holds 0.7/0.3 times the heat it is given). Engineering figures
#: of a small car's cooling system; the model learns how far healthy cars stray from it.
COLD = -10.0  # °C: coolant_excess is floored here
SET_POINT, INTAKE_REF, SET_POINT_PER_INTAKE = 90.0, 30.0, 0.3
HEAT_PER_AMP, HEAT_PER_SPEED, HOLD = 0.095, 0.01, 0.7 / 0.3


def coolant_excess(columns: Columns) -> npt.NDArray[np.float64]:
    """The coolant above a healthy cooling system's equilibrium at this reading (°C)."""
    intake = np.asarray(columns["intake_air_temp"], np.float64)
    current = np.abs(np.asarray(columns["current_draw"], np.float64))
    speed = np.asarray(columns["speed"], np.float64)
    equilibrium = (
        SET_POINT
        + SET_POINT_PER_INTAKE * (intake - INTAKE_REF)
        + HOLD * (HEAT_PER_AMP * current + HEAT_PER_SPEED * speed)
    )
    return np.asarray(columns["coolant_temp"], np.float64) - equilibrium


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
    tires = sensors[:, [index[f"tire_pressure_{w}"] for w in WHEELS]]
    tire_spread = tires - np.median(tires, axis=1, keepdims=True)
    # A cold engine (a warm-up after a stop or a repair) is no concern of the models: how far
    # below the equilibrium it is does not count beyond COLD.
    excess = np.maximum(coolant_excess(columns).reshape(-1), COLD)
    return np.column_stack([sensors, ratio, spread, tire_spread, excess]).astype(np.float32)


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
        z[:, _CONTEXT_INDEX] = 0.0
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
