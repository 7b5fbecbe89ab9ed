"""Lake: events per day and hour, failure-mode incidence, time-range export."""

from __future__ import annotations

import streamlit as st

st.title("Lake")
st.info("The lake's batch API is not available in this build yet.", icon=":material/info:")
