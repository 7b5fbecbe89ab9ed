"""The twin's desired state: what a car should be, set by command events (pure, no I/O).

A twin that received a command has these parts (see README, "Desired state"):

    desired: {firmware: {value: 2000, time, version: 3, command_id, rollout_id}}
    desired_version: 3      # +1 per accepted command: the optimistic-concurrency token
    delta: {firmware: {desired: 2000, reported: 1000, since}}   # {} once the car reports it
    recent_commands: b"..."  # digests of the last commands folded, to drop a repeated one

Each command's outcome (`applied` or `refused`, with the reason) is not twin state: the fold
returns it, and the projector writes it to the `command_outcomes` collection (one document
per command, twin/store.py) and puts it in the write's twin-change event.

Everything here depends only on the commands (one topic, keyed by car id, so one ordered
partition per car) and on the reported values, never on how the projector interleaved topics or
cut batches; so a rebuild from the topics reproduces `desired`, `desired_version` and `delta`
exactly. That is why "unknown car" is checked by the CLI, not here: whether a car's first
reading is folded before or after a command depends on that interleaving.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from fleet.contract import DESIRED_PROPERTIES, PHYSICAL_RANGES, SENSOR_TYPES
from twin.events import ms_to_datetime

Twin = dict[str, Any]
Status = Literal["done", "pending", "failed"]

#: Commands whose identity a twin remembers (newest last), so that the same command produced
#: twice (a retried `fleet twin set`) applies once. The commands stay in their Kafka topic,
#: their outcomes in `command_outcomes`.
COMMANDS_REMEMBERED = 8
DIGEST_BYTES = 8  # a command id's digest: 8 bytes instead of a 32-character id


def command_digest(command_id: str) -> bytes:
    return hashlib.blake2b(command_id.encode(), digest_size=DIGEST_BYTES).digest()


def remembers(twin: Mapping[str, Any], digest: bytes) -> bool:
    packed = twin.get("recent_commands") or b""
    return any(packed[i : i + DIGEST_BYTES] == digest for i in range(0, len(packed), DIGEST_BYTES))


def remember(twin: Twin, digest: bytes) -> None:
    packed = bytes(twin.get("recent_commands") or b"") + digest
    twin["recent_commands"] = packed[-COMMANDS_REMEMBERED * DIGEST_BYTES :]


def property_type(name: str) -> type:
    return SENSOR_TYPES[DESIRED_PROPERTIES[name]]


def check_value(name: str, value: Any) -> str | None:
    """Why a command for this property and value is invalid, or None when it is fine."""
    if name not in DESIRED_PROPERTIES:
        return f"unknown property {name!r}; known: {', '.join(sorted(DESIRED_PROPERTIES))}"
    kind = property_type(name)
    # bool is an int in Python: never accept it as a number.
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (kind is int and not isinstance(value, int)):
        return f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
    low, high = PHYSICAL_RANGES[DESIRED_PROPERTIES[name]]
    if not low <= float(value) <= high:
        return f"{name} must be within [{low:g}, {high:g}], got {value!r}"
    return None


def parse_assignment(text: str) -> tuple[str, Any]:
    """``firmware=2000`` -> ("firmware", 2000); ValueError with a one-line reason otherwise."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name or not raw:
        raise ValueError(f"expected PROPERTY=VALUE, got {text!r}")
    if name not in DESIRED_PROPERTIES:
        raise ValueError(
            f"unknown property {name!r}; known: {', '.join(sorted(DESIRED_PROPERTIES))}"
        )
    kind = property_type(name)
    try:
        value: Any = kind(raw)
    except ValueError:
        raise ValueError(
            f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None
    reason = check_value(name, value)
    if reason:
        raise ValueError(reason)
    return name, value


def fold_command(twin: Twin, record: Mapping[str, Any]) -> dict[str, Any] | None:
    """Apply one command event to ``twin`` (the fold's own copy; nested parts are copied here
    before they change) and return its outcome, or None when the twin already folded this
    command (the same command produced twice). A stale ``expected_version`` or an invalid
    value is refused: nothing of the command is applied; the outcome says why."""
    command_id = str(record["command_id"])
    digest = command_digest(command_id)
    if remembers(twin, digest):
        return None
    remember(twin, digest)
    name, value = str(record["property"]), record["value"]
    version = int(twin.get("desired_version", 0))
    expected = record.get("expected_version")
    reason = check_value(name, value)
    if reason is None and expected is not None and int(expected) != version:
        reason = f"stale version: expected {expected}, the desired state is at version {version}"
    issued_at = ms_to_datetime(int(record["issued_at"]))
    desired = dict(twin.get("desired", {}))
    if reason is None:
        version += 1
        desired[name] = {
            "value": value,
            "time": issued_at,
            "version": version,
            "command_id": command_id,
            "rollout_id": record.get("rollout_id"),
        }
    twin["desired"] = desired
    twin["desired_version"] = version
    return {
        "_id": command_id,  # one outcome per command: rewriting it is harmless
        "command_id": command_id,
        "car_id": str(twin["_id"]),
        "property": name,
        "value": value,
        "expected_version": expected,
        "outcome": "refused" if reason else "applied",
        "reason": reason,
        "version": version,
        "issued_at": issued_at,
        "issuer": str(record["issuer"]),
        "rollout_id": record.get("rollout_id"),
    }


def delta_of(twin: Mapping[str, Any]) -> dict[str, Any]:
    """Desired properties whose value the car does not report (yet)."""
    delta: dict[str, Any] = {}
    reported = twin.get("reported") or {}
    for name, want in (twin.get("desired") or {}).items():
        sensor = DESIRED_PROPERTIES.get(name)
        if sensor is None:
            continue  # a property since removed from the registry
        have = (reported.get(sensor) or {}).get("value")
        if have != want["value"]:
            delta[name] = {"desired": want["value"], "reported": have, "since": want["time"]}
    return delta


def refresh_delta(twin: Twin) -> None:
    """Recompute ``delta`` on a twin that has a desired part (others get no new parts)."""
    if "desired" in twin:
        twin["delta"] = delta_of(twin)


def rollout_status(
    twin: Mapping[str, Any], name: str, now: datetime, timeout: timedelta
) -> Status | None:
    """Where a car stands in the rollout of ``name``: done (it reports the desired value),
    pending (not yet, within ``timeout`` of the command), failed (not after ``timeout``: the
    update failed or the car never came back). None: the car was never asked."""
    if name not in (twin.get("desired") or {}):
        return None
    entry = (twin.get("delta") or {}).get(name)
    if entry is None:
        return "done"
    return "failed" if now - entry["since"] >= timeout else "pending"


def status_filter(
    name: str, status: Status, now: datetime, timeout: timedelta, rollout_id: str | None = None
) -> dict[str, Any]:
    """The MongoDB filter of the cars ``rollout_status`` puts in ``status`` (for counts/lists)."""
    query: dict[str, Any] = {f"desired.{name}": {"$exists": True}}
    if rollout_id is not None:
        query[f"desired.{name}.rollout_id"] = rollout_id
    if status == "done":
        query[f"delta.{name}"] = {"$exists": False}
    elif status == "failed":
        query[f"delta.{name}.since"] = {"$lte": now - timeout}
    else:
        query[f"delta.{name}.since"] = {"$gt": now - timeout}
    return query
