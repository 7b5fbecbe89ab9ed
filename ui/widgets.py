"""Small shared bits of the pages: number formats, labels, going to a car."""

from __future__ import annotations

import streamlit as st

CAR_PAGE = "views/car.py"  # relative to ui/app.py, as Streamlit wants
CAR_KEY = "car.id"


def fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def condition_label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def open_car(car_id: str) -> None:
    """Go to the car detail page for ``car_id`` (also put in the URL so it can be shared)."""
    st.session_state[CAR_KEY] = car_id
    st.switch_page(CAR_PAGE, query_params={"car": car_id})
