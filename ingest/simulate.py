"""Drive a fleet simulation into a sink, paced in time-lapse (or as fast as possible)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ingest.outputs import Sink
from ingest.simulator import FleetSimulator, ReadingBatch


def run_simulation(
    simulator: FleetSimulator,
    steps: int,
    sink: Sink,
    *,
    time_lapse: float = 0.0,
    chunk: int = 5000,
    on_chunk: Callable[[], None] | None = None,
    stop_requested: Callable[[float], bool] | None = None,
    transform: Callable[[ReadingBatch], ReadingBatch] | None = None,
) -> int:
    """Send ``steps`` steps of every car; return the number of readings submitted.

    ``time_lapse`` is simulated seconds per wall-clock second: 1 is real time (each car reads
    once per interval, cars spread evenly over it), 60 runs an hour in a minute, 0 means as
    fast as possible. ``stop_requested(seconds)`` waits up to that long and returns True when
    the run should end early (e.g. ``Shutdown.wait``). ``transform`` changes each step before
    it is sent (cars obeying commands: ``ingest.car_commands.CarCommands.apply``).
    """
    interval_s = simulator.config.interval_ms / 1000
    wall_per_step = interval_s / time_lapse if time_lapse > 0 else 0.0
    started = time.monotonic()
    submitted = 0
    for k in range(steps):
        batch = simulator.step()
        if transform is not None:
            batch = transform(batch)
        n = len(batch)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            if wall_per_step:
                due = started + (k + start / n) * wall_per_step
                delay = due - time.monotonic()
                if delay > 0 and stop_requested is not None and stop_requested(delay):
                    return submitted
            sink.send(batch, start, stop)
            submitted += stop - start
            if on_chunk is not None:
                on_chunk()
            if stop_requested is not None and stop_requested(0):
                return submitted
    return submitted
