"""The fleet explorer: `fleet ui` runs this script with Streamlit (multi-page navigation)."""

from __future__ import annotations

import streamlit as st

from ui import cached

st.set_page_config(
    page_title="Fleet explorer",
    page_icon=":material/directions_car:",
    layout="wide",
    initial_sidebar_state="expanded",
)

PAGES = {
    "Fleet": [
        st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("views/fleet_table.py", title="Fleet table", icon=":material/table_rows:"),
        st.Page("views/car.py", title="Car detail", icon=":material/directions_car:"),
        st.Page("views/anomalies.py", title="Anomalies", icon=":material/warning:"),
        st.Page("views/rollout.py", title="Rollouts", icon=":material/system_update:"),
    ],
    "Data": [
        st.Page("views/lake.py", title="Lake", icon=":material/database:"),
        st.Page("views/models.py", title="Models", icon=":material/model_training:"),
    ],
}

# Once per process and database: counting the twins (a whole-fleet read on some servers)
# starts in the background now, before anyone opens a page that shows the count.
cached.warm_up(cached.key())
st.navigation(PAGES).run()
