"""Lake: what is archived, events per day and hour, failure-mode incidence, and a time-range
query with CSV/Parquet download (through the lake package's reader)."""

from __future__ import annotations

import io
from datetime import timedelta

import altair as alt
import streamlit as st

from lake.datasets import lake_schema_of
from ui import context, lake_data
from ui.widgets import fmt_int

st.title("Lake")
dataset = st.radio("Dataset", ["telemetry", "anomalies"], horizontal=True, key="lake.dataset")
k = lake_data.key()
try:
    inventory = lake_data.inventory(k, dataset)
except context.Unavailable as exc:
    context.show_unavailable(exc)
    st.stop()
if inventory.objects == 0 or inventory.first is None or inventory.last is None:
    st.info(
        f"The lake has no {dataset} yet: the archiver (`fleet lake run`) writes it from Kafka.",
        icon=":material/info:",
    )
    st.stop()

cols = st.columns(4)
cols[0].metric("Events archived", fmt_int(inventory.events))
cols[1].metric("Objects", fmt_int(inventory.objects))
size = inventory.bytes
cols[2].metric("Size", f"{size / 2**20:,.1f} MiB" if size >= 2**20 else f"{size / 2**10:,.1f} KiB")
cols[3].metric(
    "Event-time span", f"{(inventory.last - inventory.first).total_seconds() / 3600:,.1f} h"
)

first = inventory.first.replace(minute=0, second=0, microsecond=0)
last = inventory.last.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
if last - first > timedelta(hours=1):
    start, end = st.slider(
        "Event-time range (UTC)",
        min_value=first,
        max_value=last,
        value=(max(first, last - timedelta(days=1)), last),
        step=timedelta(hours=1),
        format="YYYY-MM-DD HH:mm",
        key=f"lake.range.{dataset}",
    )
else:
    start, end = first, last
    st.caption(f"Event time {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC")

try:
    summary = lake_data.range_stats(k, dataset, start, end)
except context.Unavailable as exc:
    context.show_unavailable(exc)
    st.stop()

st.subheader("Events over time")
cols = st.columns(3)
cols[0].metric("Events in range", fmt_int(summary.summary["events"]))
cols[1].metric("Cars in range", fmt_int(summary.summary["cars"]))
if not summary.per_hour.empty:
    st.altair_chart(
        alt.Chart(summary.per_hour)
        .mark_bar(size=24)
        .encode(
            x=alt.X("hour start:T", title="event hour (UTC)"),
            y=alt.Y("events:Q"),
            tooltip=["hour start:T", "events:Q", "cars:Q"],
        )
        .properties(height=200),
        width="stretch",
    )
    with st.expander("Events per day"):
        st.dataframe(summary.per_day, hide_index=True, width="stretch")

if summary.incidence is not None:
    st.subheader("Failure-mode incidence (simulator labels)")
    incidence = summary.incidence
    st.dataframe(
        incidence,
        hide_index=True,
        width="stretch",
        column_config={
            "share_of_events": st.column_config.ProgressColumn(
                "share of labelled events", format="percent", min_value=0.0, max_value=1.0
            )
        },
    )

st.subheader("Query and download")
schema_columns = [f["name"] for f in lake_schema_of(dataset)["fields"]]
with st.form(f"lake.query.{dataset}"):
    cars_text = st.text_input("Cars (comma-separated, empty = all)", key=f"lake.cars.{dataset}")
    columns = st.multiselect("Columns (empty = all)", schema_columns, key=f"lake.columns.{dataset}")
    submitted = st.form_submit_button("Run query", type="primary")
if submitted:
    cars = tuple(c.strip() for c in cars_text.split(",") if c.strip()) or None
    try:
        result = lake_data.query(
            k, dataset, start=start, end=end, cars=cars, columns=tuple(columns) or None
        )
    except context.Unavailable as exc:
        context.show_unavailable(exc)
        st.stop()
    st.caption(f"{fmt_int(result.height)} events from {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC")
    st.dataframe(result.head(1000).to_pandas(), hide_index=True, width="stretch")
    stem = f"{dataset}-{start:%Y%m%dT%H}-{end:%Y%m%dT%H}"
    parquet = io.BytesIO()
    result.write_parquet(parquet)
    cols = st.columns(4)
    cols[0].download_button(
        "Download CSV", lake_data.csv_bytes(result), file_name=f"{stem}.csv", mime="text/csv"
    )
    cols[1].download_button(
        "Download Parquet",
        parquet.getvalue(),
        file_name=f"{stem}.parquet",
        mime="application/vnd.apache.parquet",
    )
