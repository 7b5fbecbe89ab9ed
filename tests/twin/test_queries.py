"""The query filters as MongoDB queries (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from twin.queries import TwinFilter


def test_no_filter_matches_everything() -> None:
    assert TwinFilter().query() == {}


def test_filters_combine() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    query = TwinFilter(
        anomalous=True, condition="coolant_overheating", firmware=1000, not_seen_since=since
    ).query()
    assert query == {
        "anomaly.is_anomaly": True,
        "health.conditions.name": "coolant_overheating",
        "reported.control_unit_firmware.value": 1000,
        "$or": [{"last_seen": {"$lt": since}}, {"last_seen": None}],
    }


def test_not_anomalous_includes_cars_never_scored() -> None:
    assert TwinFilter(anomalous=False).query() == {"anomaly.is_anomaly": {"$ne": True}}


def test_unknown_condition_is_refused() -> None:
    with pytest.raises(ValueError, match="tire_pressure_low"):
        TwinFilter(condition="flat_tire").query()
