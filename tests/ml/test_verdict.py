"""The car's verdict (ml/verdict.py): the per-event steps the twin folds with and the
vectorized form the evaluation uses are one rule; the twin's verdict is the rule's."""

from __future__ import annotations

import numpy as np
import pytest

from ml import verdict
from tests.twin.factories import envelopes, score
from twin.events import ms_to_datetime
from twin.fold import fold


def stepped(flags: list[bool]) -> list[bool]:
    recent, alarm, out = 0, False, []
    for flag in flags:
        recent, alarm = verdict.advance(recent, alarm, flag)
        out.append(alarm)
    return out


def test_three_of_five_raise_and_ten_quiet_clear() -> None:
    flags = [True, False, True, False, True, *[False] * 9, False, True]
    alarms = stepped(flags)
    assert alarms[:4] == [False] * 4
    assert alarms[4:14] == [True] * 10  # raised on the third flag of five
    assert alarms[14:] == [False, False]  # ten quiet readings clear it; one flag does not raise


def test_an_isolated_flag_every_few_readings_never_raises() -> None:
    assert not any(stepped([i % 3 == 0 for i in range(200)]))


@pytest.mark.parametrize("seed", range(20))
def test_the_vectorized_rule_is_the_stepped_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cars = [rng.random(rng.integers(1, 80)) < rng.choice([0.1, 0.4, 0.7]) for _ in range(6)]
    flags = np.concatenate(cars)
    starts = np.concatenate([np.r_[True, np.zeros(len(c) - 1, bool)] for c in cars])
    expected = np.concatenate([stepped(c.tolist()) for c in cars])
    assert verdict.car_alarms(flags, starts).tolist() == expected.tolist()
    onsets = verdict.alarm_onsets(expected, starts)
    assert onsets.sum() == sum(
        int(np.sum(np.diff(np.r_[0, stepped(c.tolist())].astype(int)) == 1)) for c in cars
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_twin_carries_the_rules_verdict_and_its_flags(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.choice([0.1, 0.9], size=60, p=[0.6, 0.4]).tolist()
    scores = [score(seq=s, value=v) for s, v in enumerate(values)]
    flags = [v > 0.5 for v in values]
    alarms = stepped(flags)
    twin = None
    for i, event in enumerate(envelopes(scores, "scores")):
        twin = fold(twin, "car1", [event]).twin
        assert twin is not None
        anomaly = twin["anomaly"]
        assert anomaly["is_anomaly"] is alarms[i]
        assert (
            verdict.flags_of(anomaly["recent"], min(i + 1, verdict.BITS))
            == flags[max(0, i + 1 - verdict.BITS) : i + 1]
        )
        if alarms[i]:
            raised = max(j for j in range(i + 1) if alarms[j] and (j == 0 or not alarms[j - 1]))
            assert anomaly["anomalous_since"] == ms_to_datetime(scores[raised]["event_time"])
            assert anomaly["reasons"] == ["coolant_temp"]
        else:
            assert anomaly["anomalous_since"] is None and anomaly["reasons"] is None
