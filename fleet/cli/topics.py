"""`fleet topics` and `fleet config`: the Kafka topics and the effective settings."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fleet import clients
from fleet.cli.context import CliError, load_settings
from fleet.settings import redacted
from fleet.topics import create_topics, topic_specs

topics_app = typer.Typer(help="The platform's Kafka topics.", no_args_is_help=True)
config_app = typer.Typer(help="The effective settings.", no_args_is_help=True)


@topics_app.command("create")
def create(
    timeout: Annotated[float, typer.Option(help="seconds to wait for the broker")] = 30.0,
) -> None:
    """Create the platform's topics if missing (idempotent)."""
    settings = load_settings()
    admin = clients.kafka_admin(settings)
    try:
        admin.list_topics(timeout=timeout)
    except Exception as exc:
        raise CliError(f"Kafka at {settings.kafka_bootstrap} is not reachable: {exc}") from None
    created = create_topics(admin, topic_specs(settings), timeout)
    typer.echo(f"created: {', '.join(created) or 'none (all exist)'}")


@topics_app.command("list")
def list_topics() -> None:
    """The platform's topics: partitions, configs, purpose, and whether they exist."""
    settings = load_settings()
    try:
        existing = clients.kafka_admin(settings).list_topics(timeout=10).topics
    except Exception as exc:
        raise CliError(f"Kafka at {settings.kafka_bootstrap} is not reachable: {exc}") from None
    table = Table("topic", "partitions", "exists", "config", "purpose")
    for spec in topic_specs(settings):
        actual = existing.get(spec.name)
        table.add_row(
            spec.name,
            str(len(actual.partitions) if actual else spec.partitions),
            "yes" if actual else "no",
            ", ".join(f"{k}={v}" for k, v in spec.config.items()),
            spec.purpose,
        )
    Console().print(table)


@config_app.command("show")
def show() -> None:
    """Print the effective settings (secrets masked) as JSON."""
    settings = load_settings()
    data = redacted(settings) | {
        "effective": {
            "kafka_bootstrap": settings.kafka_bootstrap,
            "mongodb_uri": settings.mongodb_uri,
            "mqtt": f"{settings.mqtt_host}:{settings.mqtt.port}",
            "gcs_endpoint": settings.gcs_endpoint,
        }
    }
    typer.echo(json.dumps(data, indent=2, default=str))
