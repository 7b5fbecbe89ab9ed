"""The real local stack for integration tests: started once per session on free ports in a
temporary folder, stopped at the end. Unit tests never touch it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.settings import Settings
from fleet.stack import Stack
from fleet.stack.ports import private_stack_environment


def stack_environment(home: Path) -> dict[str, str]:
    """FLEET_* variables describing a fresh stack; subprocesses (the CLI) get the same."""
    return private_stack_environment(home) | {"FLEET_KAFKA_HEAP": "-Xms256m -Xmx768m"}


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start the real stack once; yield the environment that points at it."""
    env = stack_environment(tmp_path_factory.mktemp("stack"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    stack = Stack(Settings())
    try:
        stack.up()
        yield env
    finally:
        stack.down()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def settings(stack_env: dict[str, str]) -> Settings:
    """Settings pointing at the session's stack."""
    return Settings()


def isolate(settings: Settings) -> Settings:
    """``settings`` with their own topics (created here), Mongo database and group ids, so
    tests sharing the stack never see each other's data."""
    from fleet import clients
    from fleet.topics import create_topics, topic_specs

    suffix = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(
        update={
            name: f"{getattr(settings.topics, name)}.{suffix}"
            for name in (
                "telemetry",
                "anomalies",
                "dead_letters",
                "models",
                "commands",
                "twin_changes",
            )
        }
    )
    groups = settings.groups.model_copy(
        update={name: f"{value}-{suffix}" for name, value in settings.groups.model_dump().items()}
    )
    mongodb = settings.mongodb.model_copy(update={"database": f"fleet_{suffix}"})
    isolated = settings.model_copy(update={"topics": topics, "groups": groups, "mongodb": mongodb})
    create_topics(clients.kafka_admin(isolated), topic_specs(isolated))
    return isolated


@pytest.fixture
def fresh_settings(settings: Settings) -> Settings:
    """Settings of the session's stack with this test's own topics, database and group ids."""
    return isolate(settings)
