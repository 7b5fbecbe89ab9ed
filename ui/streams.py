"""Kafka figures for the overview, cached briefly; a Kafka outage becomes a message."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import streamlit as st

from fleet.settings import Settings
from ui import stream_stats

RATE_KEY = "overview.rate_samples"


@dataclass(frozen=True)
class Telemetry:
    events: int = 0
    end_offsets: int = 0
    lag: int | None = None
    anomaly_events: int | None = None
    newest_ms: int | None = None
    error: str | None = None


@st.cache_data(ttl=5, show_spinner=False)
def _telemetry(bootstrap: str, topic: str, group: str, anomalies: str, _s: Settings) -> Telemetry:
    try:
        stats = stream_stats.topic_stats(_s, topic, group)
    except LookupError:
        return Telemetry(error=f"Kafka has no topic {topic} yet: `fleet topics create`.")
    except Exception as exc:  # librdkafka raises KafkaException and friends
        return Telemetry(
            error=f"Kafka is not reachable at {bootstrap} ({type(exc).__name__}); "
            "event rate and lag are unavailable."
        )
    try:
        scores: int | None = stream_stats.topic_stats(_s, anomalies, group).events
    except Exception:
        scores = None
    return Telemetry(stats.events, stats.end_offsets, stats.lag, scores, stats.newest_ms)


def telemetry(settings: Settings) -> Telemetry:
    return _telemetry(
        settings.kafka_bootstrap,
        settings.topics.telemetry,
        settings.groups.twin,
        settings.topics.anomalies,
        settings,
    )


@st.cache_data(ttl=300, show_spinner=False)
def _car_sample(bootstrap: str, topic: str, _s: Settings) -> tuple[str, ...]:
    try:
        return stream_stats.sample_keys(_s, topic)
    except Exception:  # librdkafka's errors: no sample, the table reads the slow way
        return ()


def car_sample(settings: Settings) -> tuple[str, ...]:
    """Car ids from the telemetry topic, for the fleet table's first page (ui/anchors.py)."""
    return _car_sample(settings.kafka_bootstrap, settings.topics.telemetry, settings)


def rate(state: Any, end_offsets: int, now: float | None = None) -> float | None:
    """Events per second between this sample and the oldest kept one (None until two)."""
    now = time.monotonic() if now is None else now
    samples: list[tuple[float, int]] = [*state.get(RATE_KEY, []), (now, end_offsets)]
    samples = [s for s in samples if now - s[0] <= 120][-20:]
    state[RATE_KEY] = samples
    (t0, e0), (t1, e1) = samples[0], samples[-1]
    if t1 - t0 < 1.0:
        return None
    return max(0, e1 - e0) / (t1 - t0)
