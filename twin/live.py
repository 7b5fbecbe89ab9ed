"""Which collection holds the live twins: a pointer document names it.

`fleet twin rebuild` builds a fresh collection and swaps it in for the live one. Renaming it
over the live one is not invisible to readers on every server: secantusd-rs drops the target
first (a reader can briefly find no twins at all), and MongoDB 7 kills queries running on a
collection being renamed over. So readers and the projector look the live collection's name
up in a pointer document (collection `twin_pointers`, `_id` = the configured name such as
`twins`), and the swap is one atomic single-document update: a reader sees the old twins or
the new ones, never none.

Without a pointer document the configured name is the collection itself (every database
before its first rebuild, and every one the projector alone ever wrote). The collection a
swap replaced stays until the next swap drops it, because a reader that looked the name up
just before the swap may still be reading it; nothing looks it up after.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from twin import store
from twin.fold import Twin

POINTERS = "twin_pointers"


def live_name(database: Database[Any], name: str) -> str:
    """The collection that holds the live twins of the configured ``name`` right now.

    Not cached: one lookup by `_id`, and a stale answer would send a writer to a replaced
    collection."""
    pointer = database[POINTERS].find_one({"_id": name}, {"collection": 1})
    return str(pointer["collection"]) if pointer else name


def live_twins(database: Database[Any], name: str) -> Collection[Twin]:
    """The live twins collection of the configured ``name`` (see `live_name`)."""
    return store.twins_collection(database, live_name(database, name))


def swap(database: Database[Any], name: str, new: str) -> str | None:
    """Make ``new`` the live collection of ``name`` in one atomic update; drop the collection
    the previous swap replaced (no reader can still be on it: it was replaced one whole
    rebuild ago). Returns the collection this swap replaced (kept until the next swap)."""
    pointers = database[POINTERS]
    before = (
        pointers.find_one_and_update(
            {"_id": name},
            {"$set": {"collection": new, "swapped_at": datetime.now(UTC)}},
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )
        or {}
    )
    replaced = str(before.get("collection", name))
    pointers.update_one({"_id": name, "collection": new}, {"$set": {"replaced": replaced}})
    earlier = before.get("replaced")
    if earlier and earlier not in (new, replaced):
        database.drop_collection(earlier)
    return replaced


def forget(database: Database[Any], name: str) -> None:
    """Drop the twins of ``name`` altogether: its live and replaced collections, its pointer."""
    pointer = database[POINTERS].find_one({"_id": name}) or {}
    for collection in {name, pointer.get("collection"), pointer.get("replaced")} - {None}:
        database.drop_collection(str(collection))
    database[POINTERS].delete_one({"_id": name})
