"""The projector's twin cache: bounded, and never a reason for a wrong twin."""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions

from fleet import clients
from fleet.settings import Settings
from tests.twin.factories import envelopes, reading, score
from twin import store
from twin.cache import TwinCache
from twin.fold import fold
from twin.project import apply_batch

TZ_AWARE = CodecOptions(tz_aware=True)


def twin_of(car: str, readings: int) -> dict[str, Any]:
    result = fold(None, car, envelopes([reading(car, seq) for seq in range(readings)]))
    assert result.twin is not None
    return result.twin


def test_a_twin_comes_back_equal_and_a_fresh_copy() -> None:
    cache = TwinCache(1 << 20, TZ_AWARE)
    twin = twin_of("car1", 3)
    cache.put(twin)
    found, missing = cache.get(["car1", "car2"])
    assert found["car1"] == twin
    assert missing == ["car2"]
    found["car1"]["health"]["conditions"].clear()  # the caller's copy, not the cache's
    assert cache.get(["car1"])[0]["car1"] == twin
    assert (cache.hits, cache.misses) == (2, 1)


def test_the_least_recently_used_twins_leave_first_within_the_byte_budget() -> None:
    twins = {car: twin_of(car, 2) for car in ("a", "b", "c")}
    size = len(bson.encode(twins["a"]))
    cache = TwinCache(2 * size + size // 2, TZ_AWARE)  # room for two
    cache.put(twins["a"])
    cache.put(twins["b"])
    cache.get(["a"])  # a is now the most recently used
    cache.put(twins["c"])
    assert set(cache.get(["a", "b", "c"])[0]) == {"a", "c"}
    assert cache.bytes <= cache.max_bytes
    cache.discard(["a"])
    assert len(cache) == 1 and cache.bytes == len(bson.encode(twins["c"]))


def test_a_budget_of_zero_keeps_nothing() -> None:
    cache = TwinCache(0, TZ_AWARE)
    cache.put(twin_of("car1", 1))
    assert len(cache) == 0 and cache.get(["car1"]) == ({}, ["car1"])


@pytest.mark.integration
def test_a_stale_cached_twin_is_read_again_and_nothing_is_lost(fresh_settings: Settings) -> None:
    """Another writer (a rebalance, a rebuild swap) changes a twin behind the cache's back:
    the guarded write folded from the stale copy loses, and the car is re-read and re-folded."""
    database = clients.mongo_database(fresh_settings)
    twins = store.twins_collection(database, "twins")
    cache = TwinCache(1 << 20, twins.codec_options)
    readings = envelopes([reading("car1", seq) for seq in range(6)])
    scores = envelopes([score("car1", seq, 0.9) for seq in range(6)], topic="anomalies")

    apply_batch(twins, {"car1": readings[:2]}, 50, cache=cache)
    apply_batch(twins, {"car1": readings[2:4] + scores[:3]}, 50)  # another writer, no cache
    assert cache.get(["car1"])[0]["car1"]["revision"] == 2  # stale now
    applied = apply_batch(twins, {"car1": readings[4:] + scores[3:]}, 50, cache=cache)

    assert applied.conflicts == 1
    expected = fold(None, "car1", readings + scores).twin
    assert expected is not None
    stored = twins.find_one({"_id": "car1"})
    assert stored == expected
    assert cache.get(["car1"])[0]["car1"] == expected  # the cache holds what is stored
