"""Rollouts: how far a desired value (e.g. a firmware version) has reached the fleet.

A car is done once it reports the desired value, pending until then, and failed when it still
does not `rollout_timeout` after the command (its update failed, or it never came back).
Commands are sent with `fleet twin set`; this page only reads the twins.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from fleet.contract import DESIRED_PROPERTIES
from twin.rollout import rollout_progress, rollouts
from ui import context
from ui.widgets import fmt_int

st.title("Rollouts")
cols = st.columns([1, 2, 1])
prop = cols[0].selectbox("Property", sorted(DESIRED_PROPERTIES), key="rollout.property")
try:
    with context.mongo_errors():
        known = rollouts(context.twins(), prop)
except context.Unavailable as exc:
    context.show_unavailable(exc)
    st.stop()
labels = {"": "every car asked"} | {
    r["rollout_id"]: f"{r['rollout_id']}: {prop}={r['value']} ({r['cars']} cars)" for r in known
}
chosen = cols[1].selectbox(
    "Rollout", list(labels), format_func=labels.__getitem__, key="rollout.id"
)
minutes = cols[2].number_input(
    "Failed after (min)",
    min_value=0.0,
    value=context.settings().twin.rollout_timeout / 60,
    step=1.0,
    key="rollout.timeout",
    help="A car that still does not report the desired value this long after the command "
    "counts as failed.",
)
with context.mongo_errors():
    progress = rollout_progress(
        context.twins(), prop, chosen or None, timedelta(minutes=float(minutes))
    )
if progress.total == 0:
    st.info(
        f"No car has a desired {prop} yet. Start a rollout with "
        f"`fleet twin set --where {prop}=1000 {prop}=2000`.",
        icon=":material/info:",
    )
    st.stop()

counts = progress.counts
metrics = st.columns(4)
metrics[0].metric("Cars asked", fmt_int(progress.total))
metrics[1].metric("Done", fmt_int(counts["done"]), help="Reporting the desired value")
metrics[2].metric("Pending", fmt_int(counts["pending"]), help="Not yet, within the time allowed")
metrics[3].metric("Failed", fmt_int(counts["failed"]), help="Not after the time allowed")
st.progress(counts["done"] / progress.total, text=f"{counts['done'] / progress.total:.0%} done")

columns = {
    "since": st.column_config.DatetimeColumn("commanded", format="YYYY-MM-DD HH:mm:ss"),
    "last_seen": st.column_config.DatetimeColumn("last reading", format="YYYY-MM-DD HH:mm:ss"),
}
for status, title in (("failed", "Failed cars"), ("pending", "Pending cars")):
    rows = progress.cars[status]
    if rows:
        shown = f" (first {len(rows)})" if len(rows) < counts[status] else ""
        st.subheader(f"{title}{shown}")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config=columns)
