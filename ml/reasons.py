"""An alarm's reasons in words: the reading's value beside its healthy band (pure).

The scorer names the features that drive a score (the autoencoder's largest per-feature
errors, ml/scorer.py); a person reads "tire 2_1 at 21 psi (normal 30-34)", not a share of a
normalised error. Each feature maps to the sensor a person knows, and the band is the car
model's healthy range (ingest/cars/fleet.py, twin/health.py): not learned per car, so it reads
the same on every page and for every model version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fleet.contract import UNITS, WHEELS

#: Healthy ranges of the car model's sensors (what healthy simulated cars show, a day's
#: ambient swing and the car-to-car spread included).
TIRE_PSI = (30, 34)
ACCELEROMETER_BELOW = 3.0  # m/s²: healthy [0, 1), [2, 3) on a bump (twin/health.py)
VIBRATION_PER_SPEED = (92, 108)  # mV per m/s; a degraded drive shaft shows 150
COOLANT_UP_TO = 110  # °C: a working radiator holds a healthy engine below this
CURRENT_FIRMWARE = 2000
MIN_SPEED = 0.5  # m/s: below this vibration per speed is noise


def _wheel(feature: str) -> str | None:
    return next((w for w in WHEELS if feature.endswith(w) or f"_{w}_" in feature), None)


def describe(feature: str, reading: Mapping[str, Any]) -> str:
    """One reason: the feature's sensor, its value in ``reading`` (sensor -> value) and its
    healthy band; the bare feature name when the reading lacks the value."""
    try:
        return _words(feature, reading)
    except (KeyError, TypeError, ValueError):
        return feature


def _words(feature: str, reading: Mapping[str, Any]) -> str:
    wheel = _wheel(feature)
    if feature.startswith(("tire_pressure_", "tire_spread_")) and wheel:
        psi = float(reading[f"tire_pressure_{wheel}"])
        return f"tire {wheel} at {psi:.0f} psi (normal {TIRE_PSI[0]}-{TIRE_PSI[1]})"
    if feature.startswith("accelerometer_") and wheel:
        value = float(reading[f"accelerometer_{wheel}_value"])
        return f"shock absorber {wheel} at {value:.1f} m/s² (normal below {ACCELEROMETER_BELOW:g})"
    if feature in ("vibration_per_speed", "engine_vibration_amplitude"):
        return _vibration(float(reading["engine_vibration_amplitude"]), float(reading["speed"]))
    if feature in ("coolant_temp", "coolant_excess"):
        return f"coolant {float(reading['coolant_temp']):.0f} °C (normal up to {COOLANT_UP_TO})"
    if feature == "control_unit_firmware":
        version = float(reading["control_unit_firmware"])
        return f"firmware {version:.0f} (current {CURRENT_FIRMWARE})"
    value = float(reading[feature])
    return f"{feature.replace('_', ' ')} {value:.3g} {UNITS.get(feature, '')}".strip()


def _vibration(vibration: float, speed: float) -> str:
    if speed <= MIN_SPEED:
        return f"engine vibration {vibration:.0f} mV standing still"
    low, high = VIBRATION_PER_SPEED
    return f"engine vibration {vibration / speed:.0f} mV per m/s (normal {low}-{high})"


def describe_all(features: Iterable[str], reading: Mapping[str, Any]) -> list[str]:
    """Each feature's reason, a sensor named once (a tire's pressure and its spread are one)."""
    return list(dict.fromkeys(describe(f, reading) for f in features))


def reported_reading(twin: Mapping[str, Any]) -> dict[str, Any]:
    """The twin's reported values as a reading (sensor -> value)."""
    return {name: entry.get("value") for name, entry in (twin.get("reported") or {}).items()}
