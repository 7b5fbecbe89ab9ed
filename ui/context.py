"""What every page shares: the settings, read-only server handles, and clear failure messages.

Tests inject their own settings through ``st.session_state[SETTINGS_KEY]``; the real app reads
them once from the environment and ``fleet.toml`` like every other service.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from fleet import clients
from fleet.settings import Settings, get_settings
from twin import live

SETTINGS_KEY = "fleet.settings"
#: The UI must answer quickly or say the server is away, not hang a page for 30 s.
MONGO_TIMEOUT_MS = 3_000


def settings() -> Settings:
    injected = st.session_state.get(SETTINGS_KEY)
    return injected if isinstance(injected, Settings) else get_settings()


@st.cache_resource(show_spinner=False)
def _mongo(uri: str, _settings: Settings) -> Any:
    # One pooled client per server for the whole Streamlit process (it is thread-safe).
    return clients.mongo_client(
        _settings,
        tz_aware=True,
        serverSelectionTimeoutMS=MONGO_TIMEOUT_MS,
        connectTimeoutMS=MONGO_TIMEOUT_MS,
        appname="fleet-ui",
    )


def database() -> Any:
    """The configured database, for reading only (a handle: no request to the server yet)."""
    s = settings()
    return _mongo(s.mongodb_uri, s)[s.mongodb.database]


def twins() -> Collection[dict[str, Any]]:
    """The live twins collection, for reading only (the explorer never writes); a rebuild
    swaps in another one, so its name is looked up (twin/live.py), a query like any other."""
    with mongo_errors():
        return live.live_twins(database(), settings().twin.collection)


class Unavailable(Exception):
    """A data source cannot answer; the message says which and what to do."""


@contextmanager
def mongo_errors() -> Iterator[None]:
    """Turn any MongoDB failure into one clear sentence instead of a traceback."""
    try:
        yield
    except PyMongoError as exc:
        s = settings()
        raise Unavailable(
            f"MongoDB is not reachable at {s.mongodb_uri} ({type(exc).__name__}). "
            "Start it with `fleet stack up mongodb` or check FLEET_MONGODB_URI."
        ) from exc


def show_unavailable(exc: Unavailable) -> None:
    st.error(str(exc), icon=":material/cloud_off:")
