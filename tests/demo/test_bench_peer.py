"""The peer benchmark's bookkeeping: which poll a reading first showed in, and going back."""

from __future__ import annotations

from pytest import approx

from bench.peer import freshness, went_back


def test_a_reading_shows_in_the_first_poll_with_it_or_a_newer_one() -> None:
    produced = {("car1", 1): 10.0, ("car1", 2): 11.0, ("car1", 3): 12.0, ("car2", 1): 10.5}
    observed = [
        ("car1", 0, 9.0),  # the warm-up state: nothing produced was waited for
        ("car1", 2, 11.5),  # 1 and 2 show here (1 was overwritten before any poll saw it)
        ("car2", 1, 12.0),
        ("car1", 3, 14.0),
    ]
    assert sorted(freshness(produced, observed)) == approx(sorted([1.5, 0.5, 1.5, 2.0]))


def test_observations_count_in_time_order_and_a_document_going_back_adds_nothing() -> None:
    produced = {("car1", 1): 0.0, ("car1", 2): 1.0}
    observed = [("car1", 2, 3.0), ("car1", 1, 2.0), ("car1", 0, 4.0), ("car1", 2, 5.0)]
    # 1 shows at t=2, 2 at t=3; going back to 0 and forward to 2 again shows nothing new
    assert freshness(produced, observed) == approx([2.0, 2.0])
    assert freshness({("car1", 5): 0.0}, [("car1", 4, 1.0)]) == []  # never shown: left out


def test_went_back_names_cars_seen_older_than_at_the_snapshot() -> None:
    snapshot = {"car1": 90, "car2": 40, "car3": 90}
    observed = [("car1", 90, 1.0), ("car2", 50, 1.0), ("car1", 30, 2.0), ("car1", 10, 3.0)]
    assert went_back(snapshot, observed) == {"car1": 10}
