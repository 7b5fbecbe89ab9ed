"""Per-car sequence numbers that stay increasing across bridge restarts and several bridges.

Rule (documented in the README):

* If the reading carries its own counter (``seq`` in the payload; the simulator sends its step
  number), that counter is the sequence: a redelivered message keeps its number, so consumers
  can recognise it as a duplicate.
* Otherwise the sequence is a clock in microseconds (receive time for the bridge, event time
  for the CSV importer), bumped by one when a car's previous number is not smaller. A
  restarted bridge, or another bridge of the same shared subscription, therefore continues
  above every number handed out before (as long as clocks do not step back), instead of
  restarting at zero and having its new readings taken for old duplicates.

Numbers are comparable per car and per source: consumers order by (event_time, seq).
"""

from __future__ import annotations


class Sequencer:
    """Hands out the next per-car sequence number; pure apart from its own memory."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def next(self, car_id: str, own: int | None, clock_us: int) -> int:
        if own is not None:
            return own
        last = self._last.get(car_id)
        seq = clock_us if last is None or clock_us > last else last + 1
        self._last[car_id] = seq
        return seq

    def __len__(self) -> int:
        return len(self._last)
