"""Car detail: one twin — reported values, health, anomaly verdict, history, raw document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from fleet.contract import SENSORS, UNITS
from lake.history import lake_until
from ui import alarm_history, cached, context, lake_data, present
from ui.widgets import CAR_KEY, condition_label, fmt_int

DEFAULT_SENSORS = ["coolant_temp", "speed", "engine_vibration_amplitude"]
#: Chart ranges, back from the car's last reading (event time: a time-lapsed fleet runs ahead
#: of the wall clock).
RANGES = {
    "last 15 minutes": timedelta(minutes=15),
    "last hour": timedelta(hours=1),
    "last 6 hours": timedelta(hours=6),
    "last 24 hours": timedelta(days=1),
    "last 7 days": timedelta(days=7),
}

st.title("Car detail")
k = cached.key()
# The car comes from the URL (?car=...), from a click elsewhere, or from the box below.
from_url = st.query_params.get("car")
if from_url and st.session_state.get("car.url") != from_url:
    st.session_state["car.url"] = from_url
    st.session_state[CAR_KEY] = from_url
car_id = st.text_input("Car id", key=CAR_KEY, placeholder="car1").strip()
if not car_id:
    st.info("Enter a car id, or pick a car in the fleet table.", icon=":material/info:")
    st.stop()
st.query_params["car"] = car_id

try:
    twin = cached.twin(k, car_id)
except context.Unavailable as exc:
    context.show_unavailable(exc)
    st.stop()
if twin is None:
    message = f"No car with id `{car_id}` in the fleet."
    try:
        similar = cached.similar_ids(k, car_id)
    except context.Unavailable:
        similar = []
    if similar:
        message += " Some cars that exist: " + ", ".join(f"`{c}`" for c in similar)
    st.warning(message, icon=":material/search_off:")
    st.stop()

clock = twin.get("last_seen")
anomaly = twin.get("anomaly")
health = twin.get("health") or {}
counters = twin.get("counters") or {}

cols = st.columns(5)
status = health.get("status", "unknown")
cols[0].metric("Health", status, help="`attention` when at least one condition holds")
if anomaly:
    model = f"model {anomaly.get('model_name')} v{anomaly.get('model_version')}"
    cols[1].metric("Verdict", "anomalous" if anomaly.get("is_anomaly") else "normal", help=model)
    cols[2].metric("Anomaly score", f"{anomaly['score']:.3f}", help=model)
    cols[3].metric("Threshold", f"{anomaly['threshold']:.3f}", help=model)
else:
    cols[1].metric("Verdict", "not scored")
    cols[2].metric("Anomaly score", "—")
    cols[3].metric("Threshold", "—")
cols[4].metric("Readings", fmt_int(counters.get("readings_applied")))
st.caption(
    f"Last seen {present.stamp(clock)} · first seen {present.stamp(twin.get('first_seen'))} · "
    f"revision {fmt_int(twin.get('revision'))} · late readings skipped "
    f"{fmt_int(counters.get('late_skipped'))} · duplicates skipped "
    f"{fmt_int(counters.get('duplicates_skipped'))}"
)

if anomaly and anomaly.get("is_anomaly"):
    st.error(
        f"Anomalous since {present.stamp(anomaly.get('anomalous_since'))}: "
        f"{present.alarm_reasons(twin) or 'no sensor reported'} (newest reading; raised by "
        f"{', '.join(anomaly.get('reasons') or []) or 'no sensor reported'}, the newest score "
        f"driven by {present.top_sensors_text(anomaly) or 'no sensor reported'}).",
        icon=":material/warning:",
    )

tabs = st.tabs(["Reported", "Health", "History", "Raw twin"])
with tabs[0]:
    st.dataframe(
        pd.DataFrame(present.reported_rows(twin)),
        hide_index=True,
        width="stretch",
        height=38 + 35 * 18,
        column_config={"value": st.column_config.NumberColumn("value", format="%.4g")},
    )
with tabs[1]:
    rows = present.condition_rows(twin, clock) if clock else []
    if rows:
        frame = pd.DataFrame(rows)
        frame["condition"] = frame["condition"].map(condition_label)
        st.dataframe(frame, hide_index=True, width="stretch")
    else:
        st.success("No health condition holds for this car.", icon=":material/check_circle:")
with tabs[2]:
    span = st.selectbox("Range", list(RANGES), index=1, key="car.range")
    end_at = clock
    events = []
    from_lake = 0
    if end_at is not None:
        since = end_at - RANGES[span]
        try:
            events = cached.car_history(k, car_id, since, end_at)
        except context.Unavailable as exc:
            context.show_unavailable(exc)
        # Older than the history collection keeps: from the lake (it keeps every event).
        retention = context.settings().twin.history_retention_days
        lake_end = lake_until(since, end_at, events, retention, datetime.now(UTC))
        if lake_end is not None:
            try:
                older = lake_data.car_history(lake_data.key(), car_id, since, lake_end)
                events, from_lake = older + events, len(older)
            except context.Unavailable as exc:
                context.show_unavailable(exc)
    history = present.history_frame(events)
    scores = present.score_frame(events)
    if history.empty and scores.empty:
        st.info(
            f"No readings of this car in its {span} in the history collection "
            f"(`{context.settings().twin.history_collection}`, written by `fleet run history`) "
            "or, before its retention, in the lake."
        )
    else:
        chosen = st.multiselect(
            "Sensors",
            list(SENSORS),
            default=DEFAULT_SENSORS,
            key="car.sensors",
            format_func=lambda s: f"{s} ({UNITS.get(s, '')})",
        )
        # One time axis for the sensors and the score: the span of both histories.
        times = pd.concat([history["event_time"], scores["event_time"]])
        start, end = times.min(), times.max()
        if start == end:
            start, end = start - pd.Timedelta(seconds=30), end + pd.Timedelta(seconds=30)
        domain = alt.Scale(domain=[start, end])
        x = alt.X("event_time:T", title="event time (UTC)", scale=domain)
        if chosen and not history.empty:
            long = history.melt("event_time", value_vars=chosen, var_name="sensor")
            st.altair_chart(
                alt.Chart(long)
                .mark_line(point=True)
                .encode(x=x, y=alt.Y("value:Q", title=None), color="sensor:N")
                .properties(height=140)
                .facet(row=alt.Row("sensor:N", title=None), columns=1)
                .resolve_scale(y="independent"),
                width="stretch",
            )
        if scores.empty:
            st.caption("No anomaly score for this car yet.")
        else:
            # The threshold as a step line: a new model version may bring a new one.
            steps = pd.concat(
                [
                    scores[["event_time", "threshold"]],
                    scores[["threshold"]].tail(1).assign(event_time=end),
                ]
            )
            base = alt.Chart(scores).encode(x=x)
            # The car's alarm periods (its verdict replayed over these scores) behind the line.
            periods = alarm_history.car_alarm_periods(scores)
            shade = (
                alt.Chart(periods)
                .mark_rect(color="#d62728", opacity=0.15)
                .encode(
                    x=alt.X("start:T", title="event time (UTC)", scale=domain),
                    x2="end:T",
                    tooltip=["start:T", "end:T", "open:N"],
                )
            )
            st.altair_chart(
                alt.layer(
                    shade,
                    alt.Chart(steps)
                    .mark_line(strokeDash=[6, 4], color="#d62728", interpolate="step-after")
                    .encode(x=x, y=alt.Y("threshold:Q", title="anomaly score")),
                    base.mark_line(point=True, color="#1f77b4").encode(
                        y="score:Q",
                        tooltip=["event_time:T", "seq:Q", "score:Q", "threshold:Q", "anomalous"],
                    ),
                    base.mark_point(size=90, filled=True, color="#d62728")
                    .encode(y="score:Q")
                    .transform_filter("datum.anomalous"),
                ).properties(
                    height=180,
                    title="Anomaly score (line; red dots: above the threshold), threshold "
                    "(dashed) and the car's alarms (shaded)",
                ),
                width="stretch",
            )
            st.caption(
                f"Alarms in this range: {len(periods)}"
                + (" (the last still holds)" if len(periods) and periods["open"].iloc[-1] else "")
                + "; an alarm is raised when 3 of the last 5 scores are above the threshold and "
                "clears after 10 calm ones (ml/verdict.py)."
            )
            with st.expander(f"Scores ({len(scores)})"):
                st.dataframe(
                    scores.iloc[::-1],
                    hide_index=True,
                    width="stretch",
                    column_config={
                        "event_time": st.column_config.DatetimeColumn(
                            "event time", format="YYYY-MM-DD HH:mm:ss"
                        ),
                        "score": st.column_config.NumberColumn(format="%.4f"),
                        "threshold": st.column_config.NumberColumn(format="%.4f"),
                    },
                )
        source = (
            f"the lake ({from_lake:,} events older than the history collection's "
            f"{context.settings().twin.history_retention_days:g} days) and the history collection"
            if from_lake
            else "the history collection"
        )
        st.caption(
            f"{len(history)} readings and {len(scores)} scores in the {span} before the car's "
            f"last reading, from {source}."
        )
with tabs[3]:
    st.json(present.json_safe(twin), expanded=1)
