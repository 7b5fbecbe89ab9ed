"""`fleet twin set`: turn a request into command events on Kafka (never a MongoDB write).

The CLI checks what it can before producing anything, so a bad request is refused with one
clear line and nothing is half-applied: an unknown property or a wrong type, an unknown car
(no twin), a stale ``--expect-version``. The projector checks the version again when it applies
the command (another writer may have been faster) and records every outcome, a refusal with
its reason, in `command_outcomes`, which ``outcomes`` reads back.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo.collection import Collection

from fleet import clients
from fleet.avro import command_codec
from fleet.contract import DESIRED_PROPERTIES
from fleet.settings import Settings
from twin import store
from twin.desired import check_value
from twin.fold import Twin

Command = dict[str, Any]


class CommandRefused(ValueError):
    """A request that cannot be sent; the message is one line for the user."""


def issuer() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def command(  # noqa: PLR0917 (the fields of a command)
    car_id: str,
    name: str,
    value: Any,
    expected_version: int | None = None,
    rollout_id: str | None = None,
    by: str | None = None,
) -> Command:
    """One command event (see fleet/schemas/command-v1.avsc)."""
    reason = check_value(name, value)
    if reason:
        raise CommandRefused(reason)
    return {
        "command_id": uuid.uuid4().hex,
        "car_id": car_id,
        "property": name,
        "value": value,
        "expected_version": expected_version,
        "issued_at": int(time.time() * 1000),
        "issuer": by or issuer(),
        "rollout_id": rollout_id,
    }


def for_car(
    twins: Collection[Twin], car_id: str, name: str, value: Any, expect_version: int | None
) -> Command:
    """The command for one car, after checking the car exists and the version is current."""
    twin = twins.find_one({"_id": car_id}, {"desired_version": 1})
    if twin is None:
        raise CommandRefused(f"unknown car {car_id!r}: it has no twin (it never reported)")
    current = int(twin.get("desired_version", 0))
    if expect_version is not None and expect_version != current:
        raise CommandRefused(
            f"stale version: {car_id}'s desired state is at version {current}, not "
            f"{expect_version}; read it again (`fleet twin get {car_id}`) and retry"
        )
    return command(car_id, name, value, expect_version)


def where_query(where: Mapping[str, Any]) -> dict[str, Any]:
    """Filters on reported values, by desired-property name: {firmware: 1000} -> a query."""
    query: dict[str, Any] = {}
    for name, value in where.items():
        query[f"reported.{DESIRED_PROPERTIES[name]}.value"] = value
    return query


def for_fleet(
    twins: Collection[Twin], name: str, value: Any, where: Mapping[str, Any]
) -> tuple[str, list[Command]]:
    """A rollout: one command per matching car, each conditional on the desired version the car
    has now (a concurrent change to a car's desired state makes its command refused, not lost).
    Cars that already have this desired value are left alone."""
    rollout_id = f"r-{uuid.uuid4().hex[:10]}"
    by = issuer()
    commands = []
    projection = {"desired_version": 1, f"desired.{name}.value": 1}
    for twin in twins.find(where_query(where), projection).sort("_id", 1):
        if (twin.get("desired") or {}).get(name, {}).get("value") == value:
            continue
        version = int(twin.get("desired_version", 0))
        commands.append(command(twin["_id"], name, value, version, rollout_id, by))
    return rollout_id, commands


def send(settings: Settings, commands: Sequence[Command], timeout: float = 30.0) -> None:
    """Produce the commands (keyed by car id) and wait until Kafka confirmed every one."""
    codec = command_codec()
    producer = clients.kafka_producer(settings)
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for cmd, value in zip(commands, codec.encode_many(commands), strict=True):
        while True:
            try:
                producer.produce(
                    settings.topics.commands,
                    value,
                    cmd["car_id"].encode(),
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
    left = producer.flush(timeout)
    if failures or left:
        raise CommandRefused(
            f"Kafka did not confirm {len(failures) + left} of {len(commands)} commands"
            + (f": {failures[0]}" if failures else "")
        )


def outcomes(twins: Collection[Twin], commands: Sequence[Command]) -> dict[str, dict[str, Any]]:
    """The outcomes the projector recorded so far (twin/store.py `command_outcomes`), by
    command id."""
    wanted = sorted({c["command_id"] for c in commands})
    rollout_ids = {c["rollout_id"] for c in commands}
    if len(rollout_ids) == 1 and None not in rollout_ids:  # a rollout: one query, not one per car
        queries = [{"rollout_id": rollout_ids.pop()}]
    else:
        queries = [{"_id": {"$in": wanted[i : i + 100]}} for i in range(0, len(wanted), 100)]
    found: dict[str, dict[str, Any]] = {}
    chosen = set(wanted)
    for query in queries:
        for entry in store.outcomes_collection(twins).find(query):
            if entry["command_id"] in chosen:
                found[entry["command_id"]] = entry
    return found
