"""The live twins collection behind its pointer document (twin/live.py), on the real server."""

from __future__ import annotations

import pytest

from fleet import clients
from fleet.settings import Settings
from fleet.waiting import wait_for
from tests.twin.factories import reading
from tests.twin.kafka_helpers import events_applied, produce, running_projector
from twin import live, store

pytestmark = pytest.mark.integration


def test_without_a_pointer_the_configured_name_is_the_collection(fresh_settings: Settings) -> None:
    database = clients.mongo_database(fresh_settings)
    assert live.live_name(database, "twins") == "twins"
    assert live.live_twins(database, "twins").name == "twins"


def test_a_swap_keeps_what_it_replaced_until_the_next_swap(fresh_settings: Settings) -> None:
    database = clients.mongo_database(fresh_settings)
    for name in ("twins", "twins_a", "twins_b"):
        database[name].insert_one({"_id": "car1", "in": name})

    assert live.swap(database, "twins", "twins_a") == "twins"
    assert live.live_twins(database, "twins").find_one({"_id": "car1"}) == {
        "_id": "car1",
        "in": "twins_a",
    }
    assert {"twins", "twins_a"} <= set(database.list_collection_names())

    assert live.swap(database, "twins", "twins_b") == "twins_a"
    assert live.live_name(database, "twins") == "twins_b"
    names = set(database.list_collection_names())
    assert {"twins_a", "twins_b"} <= names  # twins_a: a reader may still be on it
    assert "twins" not in names  # replaced a whole swap ago: nobody reads it

    live.forget(database, "twins")
    assert not {"twins", "twins_a", "twins_b"} & set(database.list_collection_names())
    assert live.live_name(database, "twins") == "twins"


def test_the_projector_follows_a_swap(fresh_settings: Settings) -> None:
    cars = [f"car{c}" for c in range(5)]
    produce(fresh_settings, [reading(car, seq=s) for s in range(3) for car in cars])
    database = clients.mongo_database(fresh_settings)
    with running_projector(fresh_settings):
        wait_for(lambda: events_applied(fresh_settings) == 15, 60, "first events")
        fresh = store.twins_collection(database, "twins_swapped_in")
        store.ensure_indexes(fresh)
        live.swap(database, fresh_settings.twin.collection, fresh.name)
        produce(fresh_settings, [reading(car, seq=3) for car in cars])
        wait_for(
            lambda: fresh.count_documents({"last_reading.seq": 3}) == len(cars),
            60,
            "the next readings in the collection swapped in",
        )
    replaced = store.twins_collection(database, fresh_settings.twin.collection)
    assert replaced.count_documents({"last_reading.seq": 3}) == 0
    assert replaced.count_documents({}) == len(cars)
