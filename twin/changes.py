"""Twin-change events: what each twin write changed, for systems that subscribe to twin changes
instead of polling MongoDB.

One event per twin write (the projector writes each car once per batch): the twin's new
``revision``, the changed ``paths`` and their new ``values`` (JSON). Paths are per property for
the property maps (``reported.speed``, ``desired.firmware``, ``delta.firmware``) and whole
parts otherwise (``health``, ``anomaly``, ``desired_version``, ``last_seen``, ...); bookkeeping
(counters, positions, reading and command identities) is left out. A write that folded commands
also carries their outcomes (path ``commands``: a list, applied or refused with the reason);
they are not twin state, so a consumer's copy of the twin does not keep them.

Exactly-once in effect, at-least-once delivery:
- The projector produces a batch's change events after its MongoDB write and waits for Kafka to
  confirm them before it commits the batch's offsets.
- If it dies between the write and that confirmation, the events are redelivered, and the fold
  finds them already applied (the twin's positions). A car with such a redelivered event gets a
  *snapshot* change (``snapshot: true``, every path with its current value) at its current
  revision: it carries whatever the lost change carried, and a consumer *replaces* its copy
  of the car with it (a path absent from a snapshot no longer exists on the twin).
- So events may repeat, never go missing. Keyed by car id (one partition, in order), a
  consumer keeps the last revision per car and drops an event whose revision is not above it
  (``ChangeView.apply``); applying the values of the rest by path (null = remove the path;
  a snapshot replaces the whole car) reproduces the twin's parts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet import clients
from fleet.avro import twin_change_codec
from fleet.settings import Settings
from twin.fold import Twin

#: Parts whose entries are diffed one by one: path = part.name.
PER_PROPERTY = ("reported", "desired", "delta")
#: Parts diffed as a whole: path = part.
WHOLE = (
    "desired_version",
    "health",
    "anomaly",
    "last_reading",
    "first_seen",
    "last_seen",
)
#: Paths an event carries that are not parts of the twin: this write's command outcomes.
EVENT_ONLY = ("commands",)
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Written:
    """One car the projector handled: the twin before and after (the same when nothing new was
    applied), and whether some of its events were redeliveries (then a snapshot is due)."""

    car_id: str
    before: Twin | None
    after: Twin
    replayed: bool
    commands: tuple[dict[str, Any], ...] = ()  # outcomes of the commands this write folded


def paths_of(twin: Mapping[str, Any]) -> dict[str, Any]:
    """The twin's tracked parts flattened to path -> value."""
    out: dict[str, Any] = {}
    for part in PER_PROPERTY:
        for name, value in (twin.get(part) or {}).items():
            out[f"{part}.{name}"] = value
    for part in WHOLE:
        if part in twin:
            out[part] = twin[part]
    return out


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
    """Path -> new value of every path that changed (None: it was removed); the same as
    comparing `paths_of` both, part by part (the projector's hot path: a part the fold did not
    touch is the same object on both twins, and is skipped at once)."""
    if before is None:
        return paths_of(after)
    changed: dict[str, Any] = {}
    for part in PER_PROPERTY:
        old, new = before.get(part) or {}, after.get(part) or {}
        if old is new:
            continue
        for name, value in new.items():
            if old.get(name, _MISSING) != value:
                changed[f"{part}.{name}"] = value
        changed.update({f"{part}.{name}": None for name in old if name not in new})
    for part in WHOLE:
        was, now = before.get(part, _MISSING), after.get(part, _MISSING)
        if now is _MISSING:
            if was is not _MISSING:
                changed[part] = None
        elif was is not now and was != now:
            changed[part] = now
    return changed


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def iso(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds (BSON's precision), e.g. 2026-11-25T13:00:10.000Z."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_json(values: Mapping[str, Any]) -> str:
    return json.dumps(values, default=_json_default, separators=(",", ":"), sort_keys=True)


def change_event(written: Written, now_ms: int) -> dict[str, Any]:
    """The twin-change event of one write (a snapshot after a redelivery)."""
    values = paths_of(written.after) if written.replayed else diff(written.before, written.after)
    if written.commands:
        values["commands"] = [
            {k: v for k, v in outcome.items() if k != "_id"} for outcome in written.commands
        ]
    return {
        "car_id": written.car_id,
        "revision": int(written.after["revision"]),
        "paths": sorted(values),
        "values": to_json(values),
        "snapshot": written.replayed,
        "changed_at": now_ms,
    }


@dataclass
class ChangeView:
    """A consumer's copy of the twins' tracked parts, kept from twin-change events."""

    revisions: dict[str, int] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # car -> path -> value
    duplicates: int = 0

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Apply one event; False (and nothing changes) when it is a duplicate."""
        car = str(event["car_id"])
        if event["revision"] <= self.revisions.get(car, -1):
            self.duplicates += 1
            return False
        self.revisions[car] = int(event["revision"])
        if event.get("snapshot"):
            self.values[car] = {}  # everything that exists is in it
        view = self.values.setdefault(car, {})
        for path, value in json.loads(event["values"]).items():
            if path in EVENT_ONLY:
                continue
            if value is None:
                view.pop(path, None)
            else:
                view[path] = value
        return True


def comparable_paths(twin: Mapping[str, Any]) -> dict[str, Any]:
    """The twin's tracked paths as a change event carries them (JSON types), for comparisons."""
    values: dict[str, Any] = json.loads(to_json(paths_of(twin)))
    return {path: value for path, value in values.items() if value is not None}


class ChangeEmitter:
    """Produces change events; ``flush`` returns once Kafka confirmed every one of them."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.twin_changes
        self.codec = twin_change_codec()
        # No delivery timeout: a change event must not be dropped while Kafka is away.
        self.producer = clients.kafka_producer(settings, **{"message.timeout.ms": 0})
        self.failures: list[str] = []
        self.produced = 0

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failures.append(str(err))

    def emit(self, written: Iterable[Written]) -> int:
        now_ms = int(time.time() * 1000)
        events = [change_event(w, now_ms) for w in written]
        for event, value in zip(events, self.codec.encode_many(events), strict=True):
            while True:
                try:
                    self.producer.produce(
                        self.topic, value, event["car_id"].encode(), on_delivery=self._delivered
                    )
                    break
                except BufferError:
                    self.producer.poll(0.1)
        self.producer.poll(0)
        self.produced += len(events)
        return len(events)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for every confirmation; raise (the batch is then not committed) on a failure."""
        left = self.producer.flush(timeout)
        if self.failures:
            failures, self.failures = self.failures, []
            raise RuntimeError(f"twin-change events were not delivered: {failures[0]}")
        if left:
            raise TimeoutError(f"{left} twin-change events not confirmed yet")

    def close(self) -> None:
        self.producer.flush(10)
