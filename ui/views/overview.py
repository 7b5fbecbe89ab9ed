"""Fleet overview: how many cars report, how many are anomalous, what is wrong, how fresh."""

from __future__ import annotations

import time

import altair as alt
import pandas as pd
import streamlit as st

from ui import alarm_chart, cached, context, present, streams
from ui.widgets import condition_label, fmt_int

REFRESH = {"off": None, "5 s": 5, "10 s": 10, "30 s": 30, "1 min": 60}
WINDOWS = {"1 min": 60, "5 min": 300, "15 min": 900, "1 h": 3600, "1 day": 86_400}

st.title("Fleet overview")
with st.sidebar:
    refresh = st.selectbox("Auto-refresh", list(REFRESH), index=2, key="overview.refresh")
    window = st.selectbox(
        "Reporting window",
        list(WINDOWS),
        index=1,
        key="overview.window",
        help="A car is reporting if its newest reading is this recent, measured from the "
        "fleet's newest reading (event time), so a replayed fleet reads like a live one.",
    )


@st.fragment(run_every=REFRESH[refresh])
def overview() -> None:
    # Fleet figures are computed once per cache TTL and shared by every render and tab.
    try:
        k = cached.key()
        clock, own_clock = cached.fleet_clock()
        summary = cached.summary(k, float(WINDOWS[window]), clock)
    except context.Unavailable as exc:
        context.show_unavailable(exc)
        return
    if summary.twins == 0:
        st.info(
            "No twins yet: the database has no cars. Start the projector "
            "(`fleet twin run`) and send readings (`fleet simulate`).",
            icon=":material/info:",
        )
        return

    cols = st.columns(4)
    cols[0].metric("Cars", fmt_int(summary.twins))
    cols[1].metric(
        f"Reporting ({window})",
        fmt_int(summary.reporting),
        help="Cars whose newest reading is within the reporting window",
    )
    cols[2].metric("Anomalous now", fmt_int(summary.anomalous), help="By the live model")
    cols[3].metric("Need attention", fmt_int(summary.attention), help="At least one condition")

    stream = streams.telemetry(context.settings())
    cols = st.columns(4)
    if stream.error:
        cols[0].metric("Events in Kafka", "—")
        st.caption(f":material/cloud_off: {stream.error}")
    else:
        rate = streams.rate(st.session_state, stream.end_offsets)
        cols[0].metric("Events in Kafka", fmt_int(stream.events))
        cols[1].metric("Event rate", "—" if rate is None else f"{rate:,.0f}/s")
        behind = "—" if stream.lag is None else fmt_int(stream.lag)
        if stream.lag is not None and rate:
            behind += f" (~{stream.lag / rate:,.1f} s)"  # how stale the newest twins are
        cols[2].metric(
            "Twin projector lag",
            behind,
            help="Events on the telemetry topic the projector has not committed yet (and how "
            "long the event rate takes to bring that many)",
        )
        if stream.anomaly_events is not None:
            cols[3].metric("Scores in Kafka", fmt_int(stream.anomaly_events))

    left, right = st.columns([3, 2])
    conditions = pd.DataFrame(
        {
            "condition": [condition_label(n) for n in summary.conditions],
            "cars": list(summary.conditions.values()),
        }
    )
    with left:
        st.subheader("Health conditions")
        st.altair_chart(
            alt.Chart(conditions)
            .mark_bar(cornerRadiusEnd=3)
            .encode(
                x=alt.X("cars:Q", title="cars", axis=alt.Axis(tickMinStep=1, format="d")),
                y=alt.Y("condition:N", sort="-x", title=None, axis=alt.Axis(labelLimit=220)),
                tooltip=["condition", "cars"],
            )
            .properties(height=200),
            width="stretch",
        )
    with right:
        st.subheader("Cars per condition")
        st.dataframe(conditions, hide_index=True, width="stretch")

    st.subheader("Cars anomalous now, by when they turned anomalous")
    series = present.onset_series(summary.onsets)
    if series.empty:
        st.caption("No car is anomalous now (or no model has scored the fleet yet).")
    else:
        base = alt.Chart(series).encode(x=alt.X("time:T", title="event time (UTC)"))
        st.altair_chart(
            alt.layer(
                base.mark_bar(opacity=0.45, size=14).encode(
                    y=alt.Y("new:Q", title="cars", axis=alt.Axis(tickMinStep=1, format="d")),
                    tooltip=["time:T", "new:Q", "anomalous cars:Q"],
                ),
                base.mark_line(point=True, interpolate="step-after", color="#d62728").encode(
                    y="anomalous cars:Q", tooltip=["time:T", "new:Q", "anomalous cars:Q"]
                ),
            ).properties(height=220),
            width="stretch",
        )
        st.caption(
            "Bars: cars that turned anomalous in each interval; line: cars anomalous now, "
            "cumulated by when each turned anomalous."
        )
    alarm_chart.cars_in_alarm(summary.clock)
    source = "newest reading" if own_clock else "wall clock: Kafka cannot tell the newest reading"
    st.caption(
        f"Fleet clock ({source}): {present.stamp(summary.clock)} · "
        f"refreshed {time.strftime('%H:%M:%S')} · auto-refresh {refresh}"
    )


overview()
