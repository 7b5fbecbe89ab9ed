"""Hold a car's newest reading back for a moment, until its anomaly score arrives, so that the
reading and its score reach the twin in one write instead of two.

In live operation each reading is followed, a fraction of a second later, by the scorer's
score of it on another topic. Written as they come, every reading costs two twin writes (the
reading's, then the score's), and a twin write is most of what the projector and the server
spend per reading (bench/results/e2e.md). So, while scores are flowing and the projector is
caught up, a car whose newest message in a batch is a reading waits for the next batch, at
most ``wait`` seconds; then it is written whatever came.

Held messages are not committed: the offset committed for a partition stops at its first
held message, so a crash or a rebalance redelivers them (the twins' positions make whatever
was applied already a no-op). Within a partition, held messages are older than anything
polled after them, so putting them first keeps each car's events in Kafka order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from twin.project import Raw

Partition = tuple[str, int]

#: Scores count as flowing while one arrived within this many seconds: a stopped scorer (or
#: no promoted model) must not hold readings back for nothing.
SCORES_FLOWING_SECONDS = 30.0


@dataclass
class ScoreWait:
    """Which of a batch's cars wait for their scores; the messages held meanwhile."""

    telemetry_topic: str
    scores_topic: str
    wait: float  # seconds; 0: never hold
    clock: Callable[[], float] = time.monotonic
    held: list[Raw] = field(default_factory=list)
    _since: dict[bytes, float] = field(default_factory=dict)  # car -> when its reading came
    _last_score: float = float("-inf")

    def split(self, polled: Sequence[Raw], live: bool) -> list[Raw]:
        """The messages to apply now: the held ones and ``polled``, except those of cars
        whose newest message is a reading that came less than ``wait`` seconds ago (kept in
        ``held``). ``live``: the projector is caught up (when behind, nothing waits)."""
        now = self.clock()
        batch = self.held + list(polled)
        if any(raw.topic == self.scores_topic for raw in polled):
            self._last_score = now
        holding = live and self.wait > 0 and now - self._last_score < SCORES_FLOWING_SECONDS
        newest: dict[bytes, str] = {raw.key: raw.topic for raw in batch}
        waiting = {
            car
            for car, topic in newest.items()
            if holding
            and topic == self.telemetry_topic
            and now - self._since.setdefault(car, now) < self.wait
        }
        self.held = [raw for raw in batch if raw.key in waiting]
        self._since = {car: self._since[car] for car in waiting}
        return [raw for raw in batch if raw.key not in waiting]

    def first_held(self) -> dict[Partition, int]:
        """Per partition, the offset of its first held message: commits must stop there."""
        first: dict[Partition, int] = {}
        for raw in self.held:
            where = (raw.topic, raw.partition)
            first[where] = min(first.get(where, raw.offset), raw.offset)
        return first

    def drop(self, partitions: Iterable[Partition]) -> None:
        """Forget the held messages of partitions no longer ours (their next owner reads
        them again: they were never committed)."""
        gone = set(partitions)
        self.held = [raw for raw in self.held if (raw.topic, raw.partition) not in gone]
        cars = {raw.key for raw in self.held}
        self._since = {car: since for car, since in self._since.items() if car in cars}
