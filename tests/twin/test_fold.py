"""The pure fold: idempotence, event time, duplicates, health since-when, anomaly part."""

from __future__ import annotations

import copy
import random

from tests.twin.factories import T0, envelopes, reading, score
from twin.events import Envelope, ms_to_datetime
from twin.fold import condition_key, fold, position_of, recent_keys


def fold_all(events: list[Envelope], current: dict | None = None, window: int = 50) -> dict:
    result = fold(current, "car1", events, dedupe_window=window)
    assert result.twin is not None
    return result.twin


def seqs(twin: dict) -> list[int]:
    """The seqs of the readings whose identity the twin remembers, oldest first."""
    return [seq for _time, seq in recent_keys(twin)]


def test_first_reading_makes_a_twin_with_reported_values_and_positions() -> None:
    twin = fold_all(envelopes([reading(seq=0, coolant_temp=41.5)], start=7))
    assert twin["_id"] == "car1"
    assert twin["reported"]["coolant_temp"] == {"value": 41.5}
    assert twin["last_reading"]["event_time"] == ms_to_datetime(T0)  # the time of `reported`
    assert twin["last_reading"] == {"event_time": ms_to_datetime(T0), "seq": 0}
    assert twin["positions"] == [{"topic": "telemetry", "partition": 0, "offset": 7}]
    assert twin["revision"] == 1
    assert twin["counters"]["events_applied"] == 1
    assert twin["first_seen"] == twin["last_seen"] == ms_to_datetime(T0)
    assert twin["health"] == {"status": "ok", "conditions": []}


def test_redelivered_events_change_nothing() -> None:
    events = envelopes([reading(seq=s) for s in range(5)])
    twin = fold_all(events)
    again = fold(twin, "car1", events)
    assert again.twin is None and again.redelivered == 5 and again.applied == 0
    partly = fold(twin, "car1", [*events[3:], *envelopes([reading(seq=5)], start=5)])
    assert partly.redelivered == 2 and partly.applied == 1
    assert partly.twin is not None and partly.twin["revision"] == 6


def test_fold_does_not_mutate_the_current_twin() -> None:
    twin = fold_all(envelopes([reading(seq=s) for s in range(3)]))
    frozen = copy.deepcopy(twin)
    fold(twin, "car1", envelopes([reading(seq=s, tire_pressure_1_1=21) for s in (1, 5)], start=3))
    assert twin == frozen


def test_a_late_reading_never_overwrites_newer_values() -> None:
    newer = reading(seq=5, coolant_temp=90.0)
    older = reading(seq=4, coolant_temp=10.0, tire_pressure_1_1=20)
    twin = fold_all(envelopes([newer, older]))
    assert twin["reported"]["coolant_temp"]["value"] == 90.0
    assert twin["last_reading"]["seq"] == 5
    assert twin["counters"]["late_skipped"] == 1
    assert twin["health"]["conditions"] == []  # the late low pressure does not raise a condition
    assert seqs(twin) == [4, 5]  # remembered in event-time order
    assert twin["first_seen"] == ms_to_datetime(older["event_time"])


def test_late_across_batches_equals_late_within_a_batch() -> None:
    records = [reading(seq=s) for s in (0, 3, 1, 2, 6, 4, 5)]
    events = envelopes(records)
    whole = fold_all(events)
    split = fold_all(events[:2])
    split = fold_all(events[2:5], split)
    split = fold_all(events[5:], split)
    assert split == whole
    assert whole["counters"]["late_skipped"] == 4  # 1, 2, 4, 5
    assert seqs(whole) == [0, 1, 2, 3, 4, 5, 6]


def test_any_batching_gives_the_same_twin() -> None:
    rng = random.Random(4)
    records = [reading(seq=s) for s in range(40)]
    rng.shuffle(records)
    events = envelopes(records) + envelopes([score(seq=s) for s in range(10)], "scores", 2)
    rng.shuffle(events)  # topics interleave arbitrarily; each partition keeps its order
    events.sort(key=lambda e: (e.topic, e.offset))
    whole = fold_all(events, window=8)
    for _ in range(5):
        twin = None
        cuts = sorted(rng.sample(range(1, len(events)), 6))
        for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True):
            twin = fold_all(events[a:b], twin, window=8) if events[a:b] else twin
        assert twin == whole


def test_duplicate_readings_are_counted_and_skipped() -> None:
    records = [reading(seq=0), reading(seq=1), reading(seq=1), reading(seq=0)]
    twin = fold_all(envelopes(records))
    assert twin["counters"]["duplicates_skipped"] == 2
    assert twin["counters"]["readings_applied"] == 2
    assert seqs(twin) == [0, 1]
    assert twin["revision"] == 4  # every new Kafka position is a change


def test_the_dedupe_window_is_bounded_and_keeps_the_newest() -> None:
    twin = fold_all(envelopes([reading(seq=s) for s in range(30)]), window=10)
    assert seqs(twin) == list(range(20, 30))
    too_old = fold_all(envelopes([reading(seq=3)], start=30), twin, window=10)
    assert seqs(too_old) == list(range(20, 30))
    assert too_old["counters"]["late_skipped"] == 1
    fits = fold_all(
        envelopes([reading(seq=25, event_time=T0 + 25 * 10_000 + 1)], start=31), too_old, window=10
    )
    assert seqs(fits) == [21, 22, 23, 24, 25, 25, 26, 27, 28, 29]


def test_health_condition_since_when_and_clearing() -> None:
    records = [
        reading(seq=0),
        reading(seq=1, tire_pressure_2_1=22),
        reading(seq=2, tire_pressure_2_1=21),
        reading(seq=3, tire_pressure_2_1=33),
    ]
    twin = fold_all(envelopes(records[:3]))
    (condition,) = twin["health"]["conditions"]
    assert condition_key(condition) == "tire_pressure_low_2_1"
    assert "key" not in condition  # name and wheel say it
    assert condition["name"] == "tire_pressure_low" and condition["wheel"] == "2_1"
    assert condition["since"] == ms_to_datetime(records[1]["event_time"])
    assert condition["evidence"] == {"tire_pressure_2_1": 22}
    assert twin["health"]["status"] == "attention"
    cleared = fold_all(envelopes(records[3:], start=3), twin)
    assert cleared["health"] == {"status": "ok", "conditions": []}


def test_coolant_rule_uses_the_previous_reported_reading() -> None:
    records = [reading(seq=s, coolant_temp=50.0 + s * 10.0 * 0.5) for s in range(3)]
    twin = fold_all(envelopes(records))
    keys = [condition_key(c) for c in twin["health"]["conditions"]]
    assert keys == ["coolant_overheating"]
    assert twin["health"]["conditions"][0]["since"] == ms_to_datetime(records[1]["event_time"])


def test_unknown_verdict_keeps_the_condition() -> None:
    records = [
        reading(seq=0, speed=20.0, engine_vibration_amplitude=3000.0),
        reading(seq=1, speed=0.0, engine_vibration_amplitude=0.0),
    ]
    twin = fold_all(envelopes(records))
    assert [condition_key(c) for c in twin["health"]["conditions"]] == ["drive_shaft_vibration"]


def test_anomaly_part_by_event_time_with_the_cars_verdict() -> None:
    """The newest score wins; the car turns anomalous on 3 of its last 5 readings above the
    threshold (since the score that made it 3, naming its sensors) and clears after 10 quiet
    ones; late and repeated scores step nothing."""
    values = [0.9, 0.8, 0.1, 0.7, *[0.2] * 9, 0.2]
    scores = [score(seq=s + 1, value=v) for s, v in enumerate(values)]
    scores.insert(2, score(seq=0, value=0.9))  # late: ignored
    scores.insert(4, score(seq=3, value=0.1))  # duplicate of seq 3
    twin = None
    seen = []
    for env in envelopes(scores, "scores", 1):
        twin = fold_all([env], twin)
        seen.append((twin["anomaly"]["seq"], twin["anomaly"]["is_anomaly"]))
    assert twin is not None
    raised = ms_to_datetime(scores[5]["event_time"])  # seq 4: the third of 0.9, 0.8, 0.1, 0.7
    assert seen[:6] == [(1, False), (2, False), (2, False), (3, False), (3, False), (4, True)]
    in_alarm = [seq for seq, alarm in seen if alarm]
    assert in_alarm == list(range(4, 14))  # 0.7 at seq 4, then 9 quiet: the 10th clears it
    assert twin["anomaly"]["seq"] == 14 and twin["anomaly"]["is_anomaly"] is False
    assert twin["anomaly"]["anomalous_since"] is None and twin["anomaly"]["reasons"] is None
    assert twin["anomaly"]["recent"] == 0b1101_0000_0000_00  # seq 1, 2 and 4, oldest first
    assert twin["anomaly"]["top_sensors"] == {"coolant_temp": 0.7}
    assert twin["counters"]["late_skipped"] == 1
    assert twin["counters"]["duplicates_skipped"] == 1
    assert twin["counters"]["scores_applied"] == 14
    assert twin["reported"] == {} and twin["last_seen"] is None
    assert position_of(twin, "scores", 1) == len(scores) - 1
    halfway = fold_all(envelopes(scores[:7], "scores", 1))
    assert halfway["anomaly"]["anomalous_since"] == raised
    assert halfway["anomaly"]["reasons"] == ["coolant_temp"]


def test_a_new_model_versions_score_of_the_newest_reading_replaces_its_flag() -> None:
    scores = [score(seq=s, value=0.9) for s in range(2)]
    scores.append(score(seq=1, value=0.1, version="2"))  # seq 1 again, by model version 2
    scores.append(score(seq=2, value=0.9))
    twin = fold_all(envelopes(scores, "scores"))
    assert twin["anomaly"]["recent"] == 0b101
    assert twin["anomaly"]["is_anomaly"] is False  # 2 of the last 5, not 3


def test_positions_per_topic_partition() -> None:
    events = envelopes([reading(seq=0)], "t", 3, start=40) + envelopes([score()], "a", 0, start=9)
    twin = fold_all(events)
    assert position_of(twin, "t", 3) == 40
    assert position_of(twin, "a", 0) == 9
    assert position_of(twin, "t", 0) == -1


def test_twins_carry_an_indexed_copy_of_their_id_older_twins_get_it_on_their_next_event() -> None:
    twin = fold_all(envelopes([reading(seq=0)]))
    assert twin["car_id"] == twin["_id"] == "car1"
    older = {k: v for k, v in twin.items() if k != "car_id"}  # from before the field
    again = fold_all(envelopes([reading(seq=1)], start=1), current=older)
    assert again["car_id"] == "car1"
    assert "car_id" not in older  # the caller's document is left untouched
