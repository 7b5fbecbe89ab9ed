"""The twin's desired state: what a car should be, set by command events (pure, no I/O).

A twin that received a command has these parts (see README, "Desired state"):

    desired: {firmware: {value: 2000, time, version: 3, command_id, rollout_id}}
    desired_version: 3      # +1 per accepted command: the optimistic-concurrency token
    delta: {firmware: {desired: 2000, reported: 1000, since}}   # {} once the car reports it
    command_log: [{command_id, property, value, outcome: applied|refused, reason, ...}]

Everything here depends only on the commands (one topic, keyed by car id, so one ordered
partition per car) and on the reported values, never on how the projector interleaved topics or
cut batches; so a rebuild from the topics reproduces `desired`, `desired_version` and `delta`
exactly. That is why "unknown car" is checked by the CLI, not here: whether a car's first
reading is folded before or after a command depends on that interleaving.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from fleet.contract import DESIRED_PROPERTIES, PHYSICAL_RANGES, SENSOR_TYPES
from twin.events import ms_to_datetime

Twin = dict[str, Any]
Outcome = Literal["applied", "refused", "duplicate"]
Status = Literal["done", "pending", "failed"]

#: Command outcomes kept on each twin (newest last): a twin is state; the commands themselves
#: stay in their Kafka topic.
COMMAND_LOG_SIZE = 3


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


def fold_command(twin: Twin, record: Mapping[str, Any]) -> Outcome:
    """Apply one command event to ``twin`` (the fold's own copy; nested parts are copied here
    before they change). A stale ``expected_version`` or an invalid value is refused: nothing
    of the command is applied, and the refusal is logged on the twin."""
    command_id = str(record["command_id"])
    log: list[dict[str, Any]] = list(twin.get("command_log", []))
    if any(entry["command_id"] == command_id for entry in log):
        return "duplicate"  # the same command produced twice (e.g. a retried `fleet twin set`)
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
    log.append(
        {
            "command_id": command_id,
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
    )
    twin["command_log"] = log[-COMMAND_LOG_SIZE:]
    return "refused" if reason else "applied"


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
