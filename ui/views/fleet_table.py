"""Fleet table: search, filter and sort the twins a page at a time; select a row to open a car.

Pages are keyset pages (Next continues past the last row shown; Previous returns to where the
page before started), so every page costs the same, however deep."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pandas as pd
import streamlit as st

from twin.health import CONDITION_NAMES
from ui import cached, context
from ui.twin_reads import ANY_CONDITION, SORTABLE, TableQuery
from ui.widgets import condition_label, fmt_int, open_car

ANY = "any"
LAST_SEEN: dict[str, tuple[timedelta | None, timedelta | None]] = {
    "any time": (None, None),
    "within 1 min": (timedelta(minutes=1), None),
    "within 10 min": (timedelta(minutes=10), None),
    "within 1 h": (timedelta(hours=1), None),
    "silent for 10 min+": (None, timedelta(minutes=10)),
    "silent for 1 h+": (None, timedelta(hours=1)),
    "silent for 1 day+": (None, timedelta(days=1)),
}
PAGE_SIZE = 50

st.title("Fleet table")
k = cached.key()
clock = (
    cached.fleet_clock()[0]
    if st.session_state.get("table.last_seen", "any time") != "any time"
    else None
)

top = st.columns([2, 2, 1.3, 1.3, 1.5])
search = top[0].text_input("Car id starts with", key="table.search", placeholder="car12")
condition = top[1].selectbox(
    "Health condition",
    [ANY, ANY_CONDITION, *CONDITION_NAMES],
    format_func=lambda c: c if c in (ANY, ANY_CONDITION) else condition_label(c),
    key="table.condition",
)
anomaly = top[2].selectbox("Anomaly", ["any", "anomalous", "not anomalous"], key="table.anomaly")
firmware = top[3].text_input("Firmware version", key="table.firmware", placeholder="any")
last_seen = top[4].selectbox(
    "Last seen",
    list(LAST_SEEN),
    key="table.last_seen",
    help="Measured from the fleet's newest reading (event time)",
)
sort_cols = st.columns([2.5, 1.2, 3.3, 0.9, 0.9, 0.9])
sort = sort_cols[0].selectbox("Sort by", list(SORTABLE), key="table.sort")
reverse = sort_cols[1].toggle("Reverse", key="table.reverse", value=False)

base = TableQuery(
    search=search,
    condition=None if condition == ANY else condition,
    anomaly=anomaly,  # type: ignore[arg-type]
    firmware=int(firmware) if firmware.strip().isdigit() else None,
    seen_within=LAST_SEEN[last_seen][0],
    silent_for=LAST_SEEN[last_seen][1],
    sort=sort,
    reverse=reverse,
    page_size=PAGE_SIZE,
)
# The keyset cursors of the pages before this one (a stack); a new filter starts afresh.
if st.session_state.get("table.last_query") != base:
    st.session_state["table.last_query"] = base
    st.session_state["table.cursors"] = []
cursors: list = st.session_state.setdefault("table.cursors", [])
try:
    total = cached.table_count(k, base, clock)
    query = dataclasses.replace(base, after=cursors[-1] if cursors else None)
    rows, last = cached.table_page(k, query, clock)
except context.Unavailable as exc:
    context.show_unavailable(exc)
    st.stop()

first = len(cursors) * PAGE_SIZE + 1
more = last is not None and len(rows) == PAGE_SIZE and first + len(rows) - 1 < total
if sort_cols[3].button("First", key="table.first", disabled=not cursors):
    cursors.clear()
    st.rerun()
if sort_cols[4].button("Previous", key="table.prev", disabled=not cursors):
    cursors.pop()
    st.rerun()
if sort_cols[5].button("Next", key="table.next", disabled=not more):
    cursors.append(last)
    st.rerun()

if total == 0 or not rows:
    st.info("No car matches these filters." if base != TableQuery() else "No twins yet.")
    st.stop()

st.caption(
    f"Cars {fmt_int(first)}–{fmt_int(first + len(rows) - 1)} of {fmt_int(total)} · "
    f"page {len(cursors) + 1:,} of {max(1, -(-total // PAGE_SIZE)):,} · "
    "select a row to open the car"
)
frame = pd.DataFrame(rows)
event = st.dataframe(
    frame,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    key="table.grid",
    height=min(38 + 35 * len(frame), 640),
    column_config={
        "car": st.column_config.TextColumn("car", width="small"),
        "health": st.column_config.TextColumn("health", width="small"),
        "conditions": st.column_config.TextColumn("conditions", width="large"),
        "anomalous": st.column_config.CheckboxColumn("anomalous"),
        "score": st.column_config.NumberColumn("score", format="%.3f"),
        "last seen": st.column_config.DatetimeColumn("last seen", format="YYYY-MM-DD HH:mm:ss"),
        "readings": st.column_config.NumberColumn("readings", format="%d"),
    },
)
selected = event.selection.rows if event is not None else []  # type: ignore[attr-defined]
if selected:
    open_car(str(frame.iloc[selected[0]]["car"]))
