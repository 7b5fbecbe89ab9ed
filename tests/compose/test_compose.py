"""The Docker Compose file stays in step with the code: services, settings names, commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from fleet.cli import app
from fleet.settings import Settings

COMPOSE = Path(__file__).parents[2] / "compose"
PLATFORM = {"bridge", "twin", "commands", "lake", "scorer", "explorer"}
SERVERS = {"kafka", "mongodb", "mosquitto", "gcs"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return data


def test_names_every_server_and_platform_component(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVERS | PLATFORM | {"topics"}
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert compose["services"]["mongodb"]["image"] == "mongo:7"
    assert "--replSet" in compose["services"]["mongodb"]["command"]


def test_platform_components_share_one_image_built_from_one_dockerfile(
    compose: dict[str, Any],
) -> None:
    for name in PLATFORM | {"topics"}:
        service = compose["services"][name]
        assert service["build"]["dockerfile"] == "compose/Dockerfile", name
        assert service["image"] == "fleet-twin:latest"
    assert (COMPOSE / "Dockerfile").is_file()


def setting_exists(variable: str) -> bool:
    """FLEET_<SECTION>_<FIELD> names a field of the settings object."""
    section, _, field = variable.removeprefix("FLEET_").lower().partition("_")
    model = Settings.model_fields.get(section)
    if model is None or not isinstance(model.annotation, type):
        return False
    return issubclass(model.annotation, BaseModel) and field in model.annotation.model_fields


def test_environment_uses_the_settings_names_of_the_code(compose: dict[str, Any]) -> None:
    variables = set()
    for service in compose["services"].values():
        variables |= {k for k in service.get("environment", {}) if k.startswith("FLEET_")}
    assert len(variables) >= 10
    unknown = sorted(v for v in variables if not setting_exists(v))
    assert unknown == []
    start_script = (COMPOSE / "mosquitto" / "start.sh").read_text()
    assert all(setting_exists(v) for v in re.findall(r"\$(FLEET_[A-Z_]+)", start_script))


def test_settings_check_rejects_a_name_the_code_does_not_have() -> None:
    assert setting_exists("FLEET_KAFKA_BOOTSTRAP_SERVERS")
    assert not setting_exists("FLEET_KAFKA_BOOTSTRAP")
    assert not setting_exists("FLEET_NOSUCH_THING")


def test_components_run_commands_the_cli_has(compose: dict[str, Any]) -> None:
    import typer.main

    root = typer.main.get_command(app)
    for name in PLATFORM | {"topics"}:
        command = compose["services"][name]["command"]
        assert command[0] == "fleet"
        group: Any = root
        for word in command[1:]:
            if word.startswith("-"):
                break
            group = group.get_command(None, word) if hasattr(group, "get_command") else None
            assert group is not None, f"{name}: 'fleet {' '.join(command[1:])}' does not exist"


def test_mosquitto_uses_the_local_stacks_acl(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["mosquitto"]["volumes"]
    assert "../fleet/stack/resources/mosquitto-acl:/mosquitto/config/acl.template:ro" in volumes
    assert "allow_anonymous false" in (COMPOSE / "mosquitto" / "mosquitto.conf").read_text()
