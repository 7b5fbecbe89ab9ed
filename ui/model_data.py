"""The model registry and the live model, as the Models page needs them (through `ml`)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ml import registry
from ml.scorer import ModelWatcher
from ui import context, lake_data

RegistryKey = tuple[str, str, str]


def key() -> RegistryKey:
    s = context.settings()
    return (s.gcs_endpoint, s.gcs.bucket, s.ml.registry_prefix)


@st.cache_data(ttl=30, show_spinner=False)
def versions(k: RegistryKey) -> list[dict[str, Any]]:
    with lake_data.gcs_errors():
        lake_data.probe(k[0])
        return registry.list_models(context.settings())


@st.cache_data(ttl=60, show_spinner=False)
def card(k: RegistryKey, name: str, version: str) -> dict[str, Any]:
    with lake_data.gcs_errors():
        return registry.card(context.settings(), name, version)


@st.cache_data(ttl=10, show_spinner=False)
def live(bootstrap: str, topic: str, model: str) -> dict[str, Any] | str | None:
    """The newest promotion of the followed model on the compacted topic; a str says why not."""
    try:
        watcher = ModelWatcher(context.settings())
    except Exception as exc:
        return f"Kafka is not reachable at {bootstrap} ({type(exc).__name__})"
    try:
        return watcher.caught_up()
    except Exception as exc:  # a missing topic or an absent broker: say so, do not crash
        return f"cannot read {topic} at {bootstrap} ({type(exc).__name__})"
    finally:
        watcher.close()
