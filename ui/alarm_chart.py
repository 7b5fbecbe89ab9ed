"""The fleet's cars in alarm over time, as the overview and anomalies pages show it."""

from __future__ import annotations

from datetime import datetime, timedelta

import altair as alt
import streamlit as st

from ui import alarm_history, cached, context

SPAN = timedelta(hours=1)


def cars_in_alarm(clock: datetime | None, span: timedelta = SPAN) -> None:
    """A chart of cars in alarm (line) and alarms raised (bars) over ``span`` back from the
    fleet clock, replayed from the history collection's scores."""
    st.subheader("Cars in alarm over time")
    if clock is None:
        st.caption("No reading yet.")
        return
    since = clock - span
    try:
        periods = cached.fleet_alarm_periods(cached.key(), since, clock)
    except context.Unavailable as exc:
        context.show_unavailable(exc)
        return
    series = alarm_history.cars_in_alarm(periods, since, clock)
    base = alt.Chart(series).encode(x=alt.X("time:T", title="event time (UTC)"))
    tooltip = ["time:T", "cars in alarm:Q", "raised:Q"]
    st.altair_chart(
        alt.layer(
            base.mark_bar(opacity=0.45).encode(
                y=alt.Y("raised:Q", title="cars", axis=alt.Axis(tickMinStep=1, format="d")),
                tooltip=tooltip,
            ),
            base.mark_line(interpolate="step-after", color="#d62728").encode(
                y="cars in alarm:Q", tooltip=tooltip
            ),
        ).properties(height=220),
        width="stretch",
    )
    cleared = int((~periods["open"].astype(bool)).sum()) if len(periods) else 0
    st.caption(
        f"Line: cars in alarm; bars: alarms raised since the step before. The last "
        f"{span.total_seconds() / 3600:g} h of event time: {len(periods)} alarms, {cleared} "
        "cleared. Replayed from the scores in the history collection (`fleet run history`) "
        "by the twin's verdict rule; an alarm raised before the range shows from its first "
        "flagged readings in it."
    )
