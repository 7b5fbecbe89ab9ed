"""A car's verdict from its readings' scores: the one rule the twin and the evaluation share.

A single reading above the threshold is weak evidence: a bump, a car's own odd baseline, a
noisy sensor. A car turns anomalous (an *alarm*) when at least ``RAISE_K`` of its last
``RAISE_N`` scored readings are above the threshold, and clears (hysteresis) once none of its
last ``CLEAR_M`` are. Why these defaults (3 of 5, clear after 10 quiet readings, ~100 s at a
reading per 10 s):

* a healthy car whose readings cross the threshold independently with chance p raises an
  alarm about C(5,3) p^3 times per reading: at p = 0.5% and 360 readings per car-hour that is
  0.45 alarms per 1,000 car-hours, inside the 1-per-1,000 budget, where a per-reading verdict
  would alarm 1,800 times;
* a developed failure crosses the threshold on most readings, so three of five take three to
  five readings (30-50 s), well inside a five-minute budget;
* clearing needs ten quiet readings in a row, so a failure that shows on only some readings
  (a drive shaft at low speed) does not flap between alarm and calm, and a repaired car clears
  within two minutes.

The state is tiny: the last ``BITS`` readings' flags as an integer (bit 0 the newest) and the
alarm itself. It is a pure function of the flags in order, so a rebuild from Kafka reproduces
it. ``advance`` / ``rescore`` are the per-event steps (the twin's folds); ``car_alarms`` is
the same rule over a car's whole sequence at once (the evaluation), tested equal.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RAISE_K = 3  # anomalous readings among the last RAISE_N that raise an alarm
RAISE_N = 5
CLEAR_M = 10  # an alarm clears once none of the last CLEAR_M readings is anomalous
BITS = 16  # readings remembered (>= RAISE_N and CLEAR_M); fits a BSON int32
# A raise needs more than one reading and never coincides with a clear or a car's start.
assert 2 <= RAISE_K <= RAISE_N <= CLEAR_M <= BITS
_KEEP = (1 << BITS) - 1
_RAISE_WINDOW = (1 << RAISE_N) - 1
_CLEAR_WINDOW = (1 << CLEAR_M) - 1

Bools = npt.NDArray[np.bool_]


def decide(recent: int, alarm: bool) -> bool:
    """The car's verdict given its recent flags (bit 0 the newest) and its verdict before."""
    if alarm:
        return bool(recent & _CLEAR_WINDOW)
    return (recent & _RAISE_WINDOW).bit_count() >= RAISE_K


def advance(recent: int, alarm: bool, flag: bool) -> tuple[int, bool]:
    """A newer reading's flag: shifted in, then the verdict decided again."""
    recent = ((recent << 1) | int(flag)) & _KEEP
    return recent, decide(recent, alarm)


def rescore(recent: int, alarm: bool, flag: bool) -> tuple[int, bool]:
    """The newest reading scored again (another model version): its flag replaced."""
    recent = (recent & ~1 & _KEEP) | int(flag)
    return recent, decide(recent, alarm)


def flags_of(recent: int, count: int = BITS) -> list[bool]:
    """The remembered flags, oldest first (for display)."""
    return [bool(recent >> i & 1) for i in range(count - 1, -1, -1)]


def car_alarms(flags: Bools, starts: Bools | None = None) -> Bools:
    """The verdict after each reading, for readings in order (one car, or several cars one
    after the other with ``starts`` marking each car's first reading). Each car starts calm
    with no remembered flags, as a new twin does. Vectorized: an alarm holds from a reading
    where RAISE_K of the last RAISE_N are flagged until one where none of the last CLEAR_M
    are (the two can never both hold on one reading)."""
    flags = np.asarray(flags, bool)
    n = len(flags)
    if n == 0:
        return np.zeros(0, bool)
    if starts is None:
        starts = np.zeros(n, bool)
        starts[0] = True
    starts = np.asarray(starts, bool).copy()
    starts[0] = True
    position = np.arange(n)
    raise_now = recent_count(flags, starts, RAISE_N) >= RAISE_K
    clear_now = recent_count(flags, starts, CLEAR_M) == 0
    last_raise = np.maximum.accumulate(np.where(raise_now, position, -1))
    # A car's start acts as a clear: nothing carries over from the car before.
    last_clear = np.maximum.accumulate(np.where(clear_now | starts, position, -1))
    return np.asarray(last_raise > last_clear, bool)


def recent_count(flags: Bools, starts: Bools, window: int) -> npt.NDArray[np.int64]:
    """Per reading, how many of its car's last ``window`` readings (itself included) are
    flagged (``flags`` may be readings x columns: counted per column)."""
    flags = np.asarray(flags, bool)
    starts = np.asarray(starts, bool)
    position = np.arange(len(flags))
    first = np.maximum.accumulate(np.where(starts, position, 0))
    total = np.concatenate([np.zeros((1, *flags.shape[1:]), np.int64), np.cumsum(flags, axis=0)])
    begin = np.maximum(position - window + 1, first)
    return np.asarray(total[position + 1] - total[begin], np.int64)


def alarm_onsets(alarm: Bools, starts: Bools | None = None) -> Bools:
    """Readings where a car turns anomalous (an alarm is raised)."""
    alarm = np.asarray(alarm, bool)
    before = np.r_[False, alarm[:-1]]
    if starts is not None:
        before &= ~np.asarray(starts, bool)
    return alarm & ~before
