"""Models: registered versions with their metrics, which one is live, its threshold."""

from __future__ import annotations

from datetime import UTC, datetime

import altair as alt
import pandas as pd
import streamlit as st

from ui import context, model_data

st.title("Models")
s = context.settings()
k = model_data.key()
try:
    versions = model_data.versions(k)
except context.Unavailable as exc:
    context.show_unavailable(exc)
    st.stop()
live = model_data.live(s.kafka_bootstrap, s.topics.models, s.ml.model_name)
if isinstance(live, str):
    st.caption(f":material/cloud_off: Live model unknown: {live}")
    live = None
if not versions:
    st.info(
        "The model registry is empty: train a model with `fleet ml train`, then "
        "`fleet ml promote NAME VERSION`.",
        icon=":material/info:",
    )
    st.stop()

cols = st.columns(4)
cols[0].metric("Versions", len(versions))
if live:
    cols[1].metric("Live model", f"{live['model_name']}")
    cols[2].metric("Live version", live["model_version"])
    cols[3].metric("Live threshold", f"{live['threshold']:.4g}")
    promoted = datetime.fromtimestamp(live["promoted_at"] / 1000, tz=UTC)
    st.caption(f"Promoted {promoted:%Y-%m-%d %H:%M:%S} UTC on `{s.topics.models}`")
else:
    cols[1].metric("Live model", "none promoted")

table = pd.DataFrame(versions)
live_key = (live["model_name"], live["model_version"]) if live else None
table["live"] = [(v["name"], v["version"]) == live_key for v in versions]
st.subheader("Registered versions")
st.dataframe(
    table[["live", "name", "version", "threshold", "roc_auc", "readings", "code_version"]],
    hide_index=True,
    width="stretch",
    column_config={
        "live": st.column_config.CheckboxColumn("live"),
        "roc_auc": st.column_config.NumberColumn("ROC-AUC", format="%.3f"),
        "threshold": st.column_config.NumberColumn(format="%.4g"),
        "readings": st.column_config.NumberColumn("training readings", format="%d"),
    },
)

labels = [f"{v['name']} {v['version']}" for v in versions]
default = next((i for i, row in enumerate(table["live"]) if row), len(labels) - 1)
chosen = st.selectbox("Version", labels, index=default, key="models.version")
name, version = chosen.split(" ", 1)
try:
    data = model_data.card(k, name, version)
except context.Unavailable as exc:
    context.show_unavailable(exc)
    st.stop()
evaluation = data.get("evaluation") or {}
models = [m for m in ("autoencoder", "classifier", "combined") if m in evaluation]
if not models:
    st.info("This version has no held-out evaluation.")
    st.stop()

rows = []
for model in models:
    ev = evaluation[model]
    at = ev.get("at_threshold", {})
    rows.append(
        {
            "model": model,
            "ROC-AUC": ev.get("roc_auc"),
            "precision": at.get("precision"),
            "recall": at.get("recall"),
            "F1": at.get("f1"),
            "false alarms": at.get("false_alarm_rate"),
            "threshold": ev.get("threshold"),
        }
    )
st.subheader(f"Held-out evaluation of {version}")
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

left, right = st.columns(2)
with left:
    curves = [
        {"model": model, "false-alarm rate": fpr, "recall": tpr}
        for model in models
        if evaluation[model].get("roc")
        for fpr, tpr in zip(*evaluation[model]["roc"][:2], strict=True)
    ]
    if curves:
        st.markdown("**ROC curve**")
        st.altair_chart(
            alt.Chart(pd.DataFrame(curves))
            .mark_line()
            .encode(
                x=alt.X("false-alarm rate:Q", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("recall:Q", scale=alt.Scale(domain=[0, 1])),
                color="model:N",
            )
            .properties(height=300),
            width="stretch",
        )
with right:
    recall = {
        model: evaluation[model].get("recall_per_mode_at_false_alarm_target") or {}
        for model in models
    }
    per_mode = pd.DataFrame(
        [
            {"mode": mode, "model": model, "recall": value}
            for model, modes in recall.items()
            for mode, value in modes.items()
        ]
    )
    if not per_mode.empty:
        target = evaluation[models[0]].get("false_alarm_target", 0.01)
        st.markdown(f"**Recall per failure mode at {target:.0%} false alarms**")
        st.altair_chart(
            alt.Chart(per_mode)
            .mark_bar()
            .encode(
                x=alt.X("recall:Q", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("mode:N", title=None),
                color="model:N",
                yOffset="model:N",
                tooltip=["mode", "model", alt.Tooltip("recall:Q", format=".2f")],
            )
            .properties(height=300),
            width="stretch",
        )
        st.dataframe(
            per_mode.pivot(index="mode", columns="model", values="recall").reset_index(),
            hide_index=True,
            width="stretch",
        )
with st.expander("Model card (model.json)"):
    st.json({k: v for k, v in data.items() if k != "evaluation"}, expanded=1)
