"""A reading waits briefly for its score: both reach the twin in one write (twin/score_wait.py)."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from fleet import clients
from fleet.settings import Settings
from fleet.waiting import wait_for
from tests.twin.factories import reading, score
from tests.twin.kafka_helpers import all_twins, produce, running_projector, with_twin
from twin.project import Raw
from twin.score_wait import SCORES_FLOWING_SECONDS, ScoreWait


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def raw(topic: str, car: str, offset: int, partition: int = 0) -> Raw:
    return Raw(topic, partition, offset, car.encode(), b"")


def waiter(clock: Clock, wait: float = 0.5) -> ScoreWait:
    return ScoreWait("readings", "scores", wait, clock=clock)


def test_a_reading_waits_for_its_score_then_both_go_together() -> None:
    clock = Clock()
    wait = waiter(clock)
    assert wait.split([raw("scores", "a", 0)], live=True) == [raw("scores", "a", 0)]
    reading_b = raw("readings", "b", 5)
    assert wait.split([reading_b], live=True) == []
    assert wait.first_held() == {("readings", 0): 5}
    clock.now += 0.2
    score_b = raw("scores", "b", 1)
    assert wait.split([score_b], live=True) == [reading_b, score_b]
    assert wait.held == []


def test_a_reading_whose_score_does_not_come_goes_after_the_wait() -> None:
    clock = Clock()
    wait = waiter(clock)
    wait.split([raw("scores", "a", 0)], live=True)
    reading_b = raw("readings", "b", 5)
    assert wait.split([reading_b], live=True) == []
    clock.now += 0.3
    assert wait.split([], live=True) == []  # still within the wait
    clock.now += 0.3
    assert wait.split([], live=True) == [reading_b]
    assert wait.first_held() == {}


def test_nothing_waits_when_behind_or_when_no_scores_flow() -> None:
    clock = Clock()
    wait = waiter(clock)
    reading_b = raw("readings", "b", 5)
    assert wait.split([reading_b], live=True) == [reading_b]  # no score seen yet
    wait.split([raw("scores", "a", 0)], live=True)
    assert wait.split([reading_b], live=False) == [reading_b]  # catching up
    clock.now += SCORES_FLOWING_SECONDS + 1
    assert wait.split([reading_b], live=True) == [reading_b]  # the scorer stopped
    assert waiter(clock, wait=0).split([reading_b], live=True) == [reading_b]


def test_held_messages_keep_kafka_order_and_leave_with_their_partition() -> None:
    clock = Clock()
    wait = waiter(clock)
    wait.split([raw("scores", "x", 0)], live=True)
    first, second = raw("readings", "b", 5, partition=1), raw("readings", "b", 9, partition=1)
    other = raw("readings", "c", 7, partition=2)
    assert wait.split([first, other], live=True) == []
    assert wait.split([second], live=True) == []
    assert wait.held == [first, other, second]
    assert wait.first_held() == {("readings", 1): 5, ("readings", 2): 7}
    wait.drop([("readings", 1)])
    assert wait.held == [other]


@pytest.mark.integration
def test_the_projector_writes_a_reading_and_its_later_score_once_and_commits_no_held_reading(
    fresh_settings: Settings,
) -> None:
    settings = with_twin(fresh_settings, score_wait_seconds=120.0)
    produce(settings, [score("warm", seq=0)])  # scores are flowing
    with running_projector(settings) as projector:
        wait_for(lambda: "warm" in all_twins(settings), timeout=60, what="the first score")
        produce(settings, [reading("car1", seq=0)], partition=0)
        wait_for(lambda: projector.score_wait.held, timeout=60, what="the reading held")
        held = projector.score_wait.held[0]
        # Another car's reading behind it on the same partition, with its score: applied and
        # committed, but the commit stops at the held reading (a crash would redeliver it).
        produce(settings, [reading("car2", seq=0)], partition=0)
        produce(settings, [score("car2", seq=0)])
        wait_for(lambda: "car2" in all_twins(settings), timeout=60, what="car2's twin")
        wait_for(lambda: committed(settings, held) == held.offset, timeout=30, what="the commit")
        assert "car1" not in all_twins(settings)
        written = projector.applied.cars_written
        produce(settings, [score("car1", seq=0, value=0.7)])
        wait_for(lambda: "car1" in all_twins(settings), timeout=60, what="car1's twin")
        twin = all_twins(settings)["car1"]
        assert twin["revision"] == 2  # the reading and its score...
        assert projector.applied.cars_written == written + 1  # ...in one write
        assert all_twins(settings)["car2"]["revision"] == 2
        assert twin["anomaly"]["score"] == pytest.approx(0.7)
        assert twin["last_reading"]["seq"] == 0


@pytest.mark.integration
def test_a_held_reading_is_not_lost_when_the_projector_stops(fresh_settings: Settings) -> None:
    holding = with_twin(fresh_settings, score_wait_seconds=120.0)
    produce(holding, [score("warm", seq=0)])
    with running_projector(holding) as projector:
        wait_for(lambda: "warm" in all_twins(holding), timeout=60, what="the first score")
        produce(holding, [reading("car1", seq=0)])
        wait_for(lambda: projector.score_wait.held, timeout=60, what="the reading held")
    assert "car1" not in all_twins(holding)
    # Restarted without waiting: the uncommitted reading is delivered again and applied.
    with running_projector(with_twin(fresh_settings, score_wait_seconds=0.0)):
        wait_for(lambda: "car1" in all_twins(holding), timeout=60, what="car1's twin")
    assert all_twins(holding)["car1"]["revision"] == 1


def committed(settings: Settings, message: Raw) -> int:
    """The twin group's committed offset of the message's partition (-1001: none)."""
    consumer = clients.kafka_consumer(settings, settings.groups.twin)
    try:
        (position,) = consumer.committed(
            [TopicPartition(message.topic, message.partition)], timeout=15
        )
        return int(position.offset)
    finally:
        consumer.close()
