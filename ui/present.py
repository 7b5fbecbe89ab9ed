"""Pure presentation helpers: twin documents to rows, frames and words (no Streamlit, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from fleet.contract import SENSORS, UNITS
from ml import reasons


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def ago(then: datetime | None, now: datetime) -> str:
    """'3 min before' style distance from the fleet clock, for since-when columns."""
    then = as_utc(then)
    if then is None:
        return "never"
    seconds = (as_utc(now) - then).total_seconds()  # type: ignore[operator]
    if seconds < 1:
        return "now"
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} before"
    return f"{seconds:.0f} s before"


def stamp(value: datetime | None) -> str:
    value = as_utc(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def reported_rows(twin: dict[str, Any]) -> list[dict[str, Any]]:
    """Every sensor's latest value with its unit and the event time of its reading (one
    reading carries every sensor; twins written before that kept a time per sensor)."""
    reported = twin.get("reported") or {}
    at = (twin.get("last_reading") or {}).get("event_time")
    rows = []
    for sensor in SENSORS:
        entry = reported.get(sensor)
        if entry is None:
            continue
        rows.append(
            {
                "sensor": sensor,
                "value": entry.get("value"),
                "unit": UNITS.get(sensor, ""),
                "reading time": stamp(entry.get("time", at)),
            }
        )
    return rows


def condition_rows(twin: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for condition in (twin.get("health") or {}).get("conditions", []):
        evidence = condition.get("evidence") or {}
        rows.append(
            {
                "condition": condition.get("name", condition.get("key")),
                "wheel": condition.get("wheel") or "",
                "since": stamp(condition.get("since")),
                "for": ago(condition.get("since"), now).replace(" before", ""),
                "evidence": ", ".join(
                    f"{k} = {_short(v)} {UNITS.get(k, '')}".strip() for k, v in evidence.items()
                ),
            }
        )
    return rows


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def history_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    """A car's readings from the history collection as a wide frame, oldest first."""
    readings = [e for e in events if e.get("kind") == "reading"]
    if not readings:
        return pd.DataFrame(columns=["event_time", "seq", *SENSORS])
    frame = pd.DataFrame(readings).rename(columns={"t": "event_time"})
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame = frame[["event_time", "seq", *SENSORS]]
    return frame.sort_values(["event_time", "seq"]).reset_index(drop=True)


def score_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    """A car's scores from the history collection (each with the threshold it was judged
    against), oldest first."""
    entries = [e for e in events if e.get("kind") == "score"]
    columns = ["event_time", "seq", "score", "threshold", "anomalous"]
    if not entries:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(
        {
            "event_time": pd.to_datetime([e["t"] for e in entries], utc=True),
            "seq": [e["seq"] for e in entries],
            "score": [float(e["score"]) for e in entries],
            "threshold": [float(e["threshold"]) for e in entries],
            "anomalous": [bool(e["is_anomaly"]) for e in entries],
        }
    )
    return frame.sort_values(["event_time", "seq"]).reset_index(drop=True)


def json_safe(value: Any) -> Any:
    """A twin document as JSON-friendly data (dates as ISO text)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, datetime):
        return as_utc(value).isoformat()  # type: ignore[union-attr]
    return value


def contributions(anomaly: dict[str, Any] | None) -> list[tuple[str, float]]:
    """The sensors driving a twin's newest score with their contributions, largest first: a
    map on the twin (a list of {sensor, contribution} on twins written before)."""
    top = (anomaly or {}).get("top_sensors") or {}
    if isinstance(top, dict):
        return [(str(k), float(v)) for k, v in top.items()]
    return [(str(t["sensor"]), float(t["contribution"])) for t in top]


def top_sensors_text(anomaly: dict[str, Any] | None, limit: int = 3) -> str:
    return ", ".join(name for name, _value in contributions(anomaly)[:limit])


def alarm_reasons(twin: dict[str, Any]) -> str:
    """The car's alarm in words: each sensor that raised it (or, without an alarm, that
    drives the newest score) at its newest reported value beside its healthy band, e.g.
    "tire 2_1 at 21 psi (normal 30-34)" (ml/reasons.py)."""
    anomaly = twin.get("anomaly") or {}
    features = anomaly.get("reasons") or [name for name, _v in contributions(anomaly)[:3]]
    return "; ".join(reasons.describe_all(features, reasons.reported_reading(twin)))


def driving_sensor_counts(leaders: list[dict[str, Any]]) -> pd.DataFrame:
    """How often each sensor is the top contributor among the given cars, and its mean
    contribution (squared normalized reconstruction error)."""
    rows = [
        {"sensor": name, "contribution": value}
        for doc in leaders
        for name, value in contributions(doc.get("anomaly"))[:1]
    ]
    if not rows:
        return pd.DataFrame(columns=["sensor", "cars", "mean contribution"])
    frame = pd.DataFrame(rows)
    out = frame.groupby("sensor").agg(
        cars=("contribution", "size"), mean_contribution=("contribution", "mean")
    )
    out = out.rename(columns={"mean_contribution": "mean contribution"})
    return out.sort_values(["cars", "mean contribution"], ascending=False).reset_index()


def onset_series(onsets: list[datetime], buckets: int = 40) -> pd.DataFrame:
    """Cumulative count of currently anomalous cars by when they turned anomalous."""
    if not onsets:
        return pd.DataFrame(columns=["time", "new", "anomalous cars"])
    times = pd.Series(pd.to_datetime(onsets, utc=True)).sort_values()
    span = (times.iloc[-1] - times.iloc[0]) or pd.Timedelta(seconds=1)
    freq = _nice_frequency(span / buckets)
    counts = times.dt.floor(freq).value_counts().sort_index()
    return pd.DataFrame(
        {
            "time": counts.index,
            "new": counts.to_numpy(),
            "anomalous cars": counts.cumsum().to_numpy(),
        }
    )


def _nice_frequency(step: timedelta) -> str:
    for seconds, freq in (
        (10, "10s"),
        (60, "1min"),
        (300, "5min"),
        (900, "15min"),
        (3600, "1h"),
        (6 * 3600, "6h"),
        (86_400, "1D"),
    ):
        if step.total_seconds() <= seconds:
            return freq
    return "7D"
