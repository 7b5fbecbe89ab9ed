"""Models: registered versions, their metrics, which one is live."""

from __future__ import annotations

import streamlit as st

st.title("Models")
st.info("The model registry is not available in this build yet.", icon=":material/info:")
