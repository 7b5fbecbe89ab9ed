"""The twins collection: read a batch's twins, write them back with optimistic concurrency.

Why read-modify-write rather than an update pipeline: the fold (event time, duplicate and late
readings, health rules with since-when, the car's verdict) is ordinary Python, unit-tested
without a server; one `find({_id: {$in: cars}})` per batch reads every twin, and one unordered
`bulk_write` writes them. Each write replaces the twin only if it still has the revision and
Kafka positions we read (optimistic concurrency), so two projector instances that both hold a
partition for a moment during a rebalance cannot clobber each other: the loser re-reads and
re-folds, and the positions recorded on the twin make its events no-ops. The positions live in
the same document, written by the same single-document write, as the state they produced.
Why a whole replace rather than a `$set` of the changed paths: on the local stack's server the
`$set` costs more (bench/results/twin_write.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, IndexModel, InsertOne, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from twin.cache import TwinCache
from twin.fold import Twin

DUPLICATE_KEY = 11000

#: Indexes for the README's queries (low tire pressure, top anomalous, not seen since, firmware).
INDEXES = [
    IndexModel([("health.conditions.name", ASCENDING)], name="condition"),
    IndexModel(
        [("anomaly.is_anomaly", ASCENDING), ("anomaly.score", DESCENDING)], name="anomalous"
    ),
    IndexModel([("anomaly.score", DESCENDING)], name="anomaly_score"),
    IndexModel([("reported.control_unit_firmware.value", ASCENDING)], name="firmware"),
    IndexModel([("car_id", ASCENDING)], name="car_id"),  # id ranges (see fold.new_twin)
    # "not seen since" ranges, and cars tied on last_seen (a fleet reporting in step) a page
    # at a time by id; no separate last_seen index: every index costs each twin write
    IndexModel([("last_seen", ASCENDING), ("car_id", ASCENDING)], name="last_seen_car"),
]


#: Command outcomes, one document per command (`_id` = its command id): the projector writes
#: each command's outcome here as it folds it (twin/desired.py). A twin keeps no command log.
OUTCOMES = "command_outcomes"
OUTCOME_INDEXES = [
    IndexModel([("rollout_id", ASCENDING)], name="rollout", sparse=True),
    IndexModel([("car_id", ASCENDING), ("issued_at", DESCENDING)], name="car_issued"),
]


def outcomes_collection(twins: Collection[Twin]) -> Collection[dict[str, Any]]:
    """The command outcomes beside a twins collection (same database, one for every twins
    collection of it: an outcome depends only on the commands, so a rebuild writes the same)."""
    return twins.database.get_collection(OUTCOMES, codec_options=twins.codec_options)


def write_outcomes(twins: Collection[Twin], outcomes: list[dict[str, Any]]) -> None:
    """Record command outcomes (idempotent: a redelivered command's outcome is the same)."""
    if outcomes:
        operations = [ReplaceOne({"_id": o["_id"]}, o, upsert=True) for o in outcomes]
        outcomes_collection(twins).bulk_write(operations, ordered=False)


def twins_collection(database: Database[Any], name: str) -> Collection[Twin]:
    """The collection with timezone-aware UTC datetimes, as the fold compares them."""
    return database.get_collection(name, codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))


def ensure_indexes(collection: Collection[Twin]) -> None:
    collection.create_indexes(INDEXES)
    outcomes_collection(collection).create_indexes(OUTCOME_INDEXES)


#: Ids per `$in` query: SecantusDB's `$in` slows down more than linearly with the list's length
#: (1,000 ids: 6.7 s; 10 x 100 ids: 0.9 s, measured); MongoDB does not care.
IN_CHUNK = 100


def load(
    collection: Collection[Twin], car_ids: Iterable[str], cache: TwinCache | None = None
) -> dict[str, Twin]:
    """The current twins of these cars (absent cars have none yet); with a cache, the cars it
    knows are not read from the server (see twin/cache.py for why that is safe)."""
    if cache is None:
        found: dict[str, Twin] = {}
        ids = list(car_ids)
    else:
        found, ids = cache.get(car_ids)
    for start in range(0, len(ids), IN_CHUNK):
        for doc in collection.find({"_id": {"$in": ids[start : start + IN_CHUNK]}}):
            found[doc["_id"]] = doc
    return found


def write(
    collection: Collection[Twin],
    changes: Mapping[str, tuple[Twin | None, Twin]],
    transaction: bool = False,
    encoded: dict[str, bytes] | None = None,
) -> int:
    """Write each car's new twin if its stored twin is still the one it was folded from.

    ``changes`` maps car id to (twin read, twin to write). One unordered bulk write (each car
    has one operation, so order does not matter). Returns how many cars lost a race: the caller
    re-reads and re-folds those (its events are then no-ops where already applied).

    With ``transaction``, the bulk write runs in one multi-document transaction: the server
    flushes its journal once for the whole chunk instead of once per twin (measured on
    SecantusDB: the per-write flush is about a fifth of a twin write). A transaction is all or
    nothing, so a lost insert race aborts it and every car of the chunk counts as lost; a
    write conflict with another transaction raises (TransientTransactionError): the caller
    backs off and retries the whole chunk.

    Each twin is encoded here, once: ``encoded``, if given, receives its BSON (for the
    projector's cache), and the server is sent those same bytes.
    """
    if not changes:
        return 0
    operations: list[InsertOne[Any] | ReplaceOne[Any]] = []
    options = collection.codec_options
    for car_id, (before, after) in changes.items():
        document = bson.encode(after, codec_options=options)
        if encoded is not None:
            encoded[car_id] = document
        twin = _Encoded(document)  # sent as these bytes, not encoded again
        if before is None:
            operations.append(InsertOne(twin))  # a concurrent insert fails with duplicate key
        else:
            guard = {
                "_id": car_id,
                "revision": before["revision"],
                "positions": before["positions"],
            }
            operations.append(ReplaceOne(guard, twin))
    if transaction:
        return _write_in_transaction(collection, operations)
    try:
        result = collection.bulk_write(operations, ordered=False)
    except BulkWriteError as exc:
        details = exc.details
        errors = details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors) or details.get("writeConcernErrors"):
            raise
        done = details.get("nInserted", 0) + details.get("nMatched", 0)
        return len(operations) - done
    return len(operations) - (result.inserted_count + result.matched_count)


class _Encoded(RawBSONDocument):
    """A twin's BSON, sent as it is. Always true: pymongo checks a replacement with `if
    replacement`, and a RawBSONDocument's length decodes the whole document (~60 µs)."""

    def __bool__(self) -> bool:
        return True


def _write_in_transaction(
    collection: Collection[Twin], operations: list[InsertOne[Any] | ReplaceOne[Any]]
) -> int:
    client = collection.database.client
    try:
        with client.start_session() as session, session.start_transaction():
            result = collection.bulk_write(operations, ordered=False, session=session)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return len(operations)  # a concurrent insert: the transaction was rolled back
    return len(operations) - (result.inserted_count + result.matched_count)


def supports_transactions(collection: Collection[Twin]) -> bool:
    """Multi-document transactions need a replica set member or mongos, not a standalone."""
    hello = collection.database.client.admin.command("hello")
    return "setName" in hello or hello.get("msg") == "isdbgrid"


def same_version(stored: Twin | None, written: Twin) -> bool:
    """Whether the stored twin is the one we wrote (revision and positions identify it)."""
    return (
        stored is not None
        and stored["revision"] == written["revision"]
        and stored["positions"] == written["positions"]
    )
