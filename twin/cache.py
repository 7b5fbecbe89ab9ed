"""The projector's memory of the twins it wrote last, so a batch need not read them back.

Reading a twin costs the MongoDB-wire server about as much as a third of writing it (measured
on SecantusDB: 0.7-1.7 ms a twin of 10-27 kB), and the projector is the only writer of its
twins, so the twin it wrote last is almost always the stored one. Almost: during a rebalance
another instance may write a car, and `fleet twin rebuild` swaps in a new collection. That
needs no care here, because every write is guarded by the revision and Kafka positions of the
twin it was folded from (twin/store.py): a write folded from a stale copy matches nothing,
counts as lost, and the car is read from the server and folded again.

Twins are kept as BSON bytes (immutable, ~4x smaller than the dicts), least recently used
first out, within a byte budget: memory stays bounded whatever the size of the fleet.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import bson
from bson.codec_options import CodecOptions

from twin.fold import Twin


class TwinCache:
    """Least-recently-used twins, encoded, within ``max_bytes`` (0: keep nothing)."""

    def __init__(self, max_bytes: int, codec_options: CodecOptions) -> None:
        self.max_bytes = max_bytes
        self.codec_options = codec_options
        self._twins: OrderedDict[str, bytes] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()  # the projector applies chunks of cars in threads

    def __len__(self) -> int:
        return len(self._twins)

    def get(self, car_ids: Iterable[str]) -> tuple[dict[str, Twin], list[str]]:
        """(the twins known here, decoded afresh; the cars to read from the server)."""
        hits: dict[str, bytes] = {}
        missing: list[str] = []
        with self._lock:
            for car_id in car_ids:
                encoded = self._twins.get(car_id)
                if encoded is None:
                    missing.append(car_id)
                    continue
                self._twins.move_to_end(car_id)
                hits[car_id] = encoded
            self.hits += len(hits)
            self.misses += len(missing)
        found = {
            car: bson.decode(value, codec_options=self.codec_options) for car, value in hits.items()
        }
        return found, missing

    def put(self, twin: Twin) -> None:
        """Remember the twin as stored now (call after the server confirmed the write)."""
        if self.max_bytes <= 0:
            return
        self.put_encoded(twin["_id"], bson.encode(twin, codec_options=self.codec_options))

    def put_encoded(self, car_id: str, encoded: bytes) -> None:
        """`put` of a twin already encoded (as it was sent to the server)."""
        if self.max_bytes <= 0:
            return
        with self._lock:
            self._forget(car_id)
            if len(encoded) > self.max_bytes:
                return
            self._twins[car_id] = encoded
            self.bytes += len(encoded)
            while self.bytes > self.max_bytes:
                _oldest, dropped = self._twins.popitem(last=False)
                self.bytes -= len(dropped)

    def discard(self, car_ids: Iterable[str]) -> None:
        """Forget these cars (their stored twin may differ from ours)."""
        with self._lock:
            for car_id in car_ids:
                self._forget(car_id)

    def clear(self) -> None:
        with self._lock:
            self._twins.clear()
            self.bytes = 0

    def take_counts(self) -> tuple[int, int]:
        """(hits, misses) since the last call."""
        with self._lock:
            counts = self.hits, self.misses
            self.hits = self.misses = 0
        return counts

    def _forget(self, car_id: str) -> None:
        encoded = self._twins.pop(car_id, None)
        if encoded is not None:
            self.bytes -= len(encoded)
