"""What both car models share: the seed's constants and the shape of one step's output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fleet.contract import WHEELS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MAX_SPEED = 38.9  # m/s; the speed a car settles at on full throttle
VIBRATION_PER_SPEED = 100.0  # mV per m/s
DRIVE_SHAFT_VIBRATION_PER_SPEED = 150.0
FIRMWARE_CURRENT, FIRMWARE_OUTDATED = 2000, 1000
NO_ONSET = -1  # onset time of a mode that is not active

#: Failure modes as labelled, in the order of `fleet.contract.FAILURE_MODES`.
MODES: tuple[str, ...] = (
    *(f"shock_absorber_{w}" for w in WHEELS),
    *(f"tire_pressure_{w}" for w in WHEELS),
    "drive_shaft",
    "coolant",
    "firmware",
)


def mode_kind(mode: str) -> str:
    """``tire_pressure_1_2`` -> ``tire_pressure``; modes without a wheel are their own kind."""
    return mode.rsplit("_", 2)[0] if mode[-1].isdigit() else mode


@dataclass
class Step:
    """One reading of every car: sensor columns, and per failure mode who has it since when."""

    sensors: dict[str, npt.NDArray[Any]]
    failures: dict[str, BoolArray]
    onsets: dict[str, IntArray]  # mode -> onset time (ms); NO_ONSET where the mode is off


class CarModel(Protocol):
    def step(self, time_ms: int, first: bool) -> Step:
        """The readings at ``time_ms``; ``first``: the initial state, nothing advances."""
        ...
