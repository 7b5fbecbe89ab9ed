"""Anomalies: the most anomalous cars and the sensors that drive their scores."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from ui import alarm_chart, cached, context, present
from ui.widgets import open_car

st.title("Anomalies")
cols = st.columns([1, 1, 3])
limit = cols[0].selectbox("Show the top", [10, 25, 50, 100, 250], index=1, key="anom.limit")
only = cols[1].toggle("Anomalous only", value=True, key="anom.only")
try:
    leaders = cached.leaderboard(cached.key(), int(limit), bool(only))
except context.Unavailable as exc:
    context.show_unavailable(exc)
    st.stop()
if not leaders:
    st.info(
        "No car is anomalous now."
        if only
        else "No anomaly scores yet: train and promote a model, then run `fleet ml score`.",
        icon=":material/info:",
    )
    st.stop()

rows = [
    {
        "rank": i + 1,
        "car": doc["_id"],
        "score": doc["anomaly"]["score"],
        "threshold": doc["anomaly"]["threshold"],
        "× threshold": doc["anomaly"]["score"] / doc["anomaly"]["threshold"]
        if doc["anomaly"]["threshold"]
        else None,
        "anomalous": doc["anomaly"]["is_anomaly"],
        "since": doc["anomaly"].get("anomalous_since"),
        "reasons": present.alarm_reasons(doc),
        "driving sensors": present.top_sensors_text(doc["anomaly"]),
        "model": f"{doc['anomaly']['model_name']} v{doc['anomaly']['model_version']}",
    }
    for i, doc in enumerate(leaders)
]
left, right = st.columns([3, 2])
with left:
    st.subheader(f"Top {len(rows)} by score")
    frame = pd.DataFrame(rows)
    event = st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="anom.grid",
        column_config={
            "score": st.column_config.NumberColumn(format="%.3f"),
            "threshold": st.column_config.NumberColumn(format="%.3f"),
            "× threshold": st.column_config.ProgressColumn(
                format="%.1f×", min_value=0.0, max_value=max(r["× threshold"] or 0 for r in rows)
            ),
            "since": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )
    selected = event.selection.rows if event is not None else []  # type: ignore[attr-defined]
    if selected:
        open_car(str(frame.iloc[selected[0]]["car"]))
with right:
    st.subheader("What drives the scores")
    drivers = present.driving_sensor_counts(leaders)
    st.altair_chart(
        alt.Chart(drivers)
        .mark_bar(cornerRadiusEnd=3)
        .encode(
            x=alt.X("cars:Q", title="cars where it is the top sensor"),
            y=alt.Y("sensor:N", sort="-x", title=None),
            tooltip=["sensor", "cars", alt.Tooltip("mean contribution:Q", format=".0%")],
        )
        .properties(height=max(120, 28 * len(drivers))),
        width="stretch",
    )
    st.dataframe(
        drivers,
        hide_index=True,
        width="stretch",
        column_config={"mean contribution": st.column_config.NumberColumn(format="%.2f")},
    )

clock, _own = cached.fleet_clock()
alarm_chart.cars_in_alarm(clock)
