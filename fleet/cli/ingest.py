"""`fleet bridge`, `fleet simulate` and `fleet ingest ...`: getting readings into Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.context import CliError, load_settings

ingest_app = typer.Typer()
importers_app = typer.Typer(help="Import readings and manage car accounts.", no_args_is_help=True)
ingest_app.add_typer(importers_app, name="ingest")


@ingest_app.command("bridge")
def bridge(
    client_id: Annotated[
        str | None,
        typer.Option(help="MQTT client id; give each bridge its own (default fleet-bridge-<host>)"),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port (FLEET_INGEST_METRICS_PORT; 0 = none)")
    ] = None,
) -> None:
    """Carry readings from MQTT to Kafka; a reading is acknowledged once Kafka has it.

    Runs until SIGTERM/Ctrl-C, then stops taking messages, flushes, acknowledges and exits.
    """
    from fleet.service import Shutdown, serve_metrics
    from ingest.bridge import Bridge, KafkaFatal

    settings = load_settings()
    shutdown = Shutdown().install()
    serve_metrics(settings.ingest.metrics_port if metrics_port is None else metrics_port)
    try:
        Bridge(settings, client_id=client_id).run(shutdown)
    except KafkaFatal as exc:
        raise CliError(str(exc)) from None


@importers_app.command("csv")
def ingest_csv(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    batch_size: Annotated[int, typer.Option(min=1)] = 5000,
) -> None:
    """Replay a CSV in the seed's format (time,car,<18 sensors>; time in seconds) into Kafka."""
    from rich.console import Console

    from ingest.csv_import import BadHeader, import_csv

    settings = load_settings()
    console = Console(stderr=True)
    with console.status("importing...") as status:
        try:
            stats = import_csv(
                settings,
                file,
                batch_size,
                progress=lambda s: status.update(
                    f"rows {s.rows:,}  produced {s.produced:,}  dead-lettered {s.dead_lettered:,}"
                ),
            )
        except BadHeader as exc:
            raise CliError(f"{file}: {exc}") from None
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(stats.by_reason.items()))
    typer.echo(
        f"{file.name}: {stats.rows} rows, {stats.produced} readings to "
        f"{settings.topics.telemetry}, {stats.dead_lettered} dead letters to "
        f"{settings.topics.dead_letters}" + (f" ({reasons})" if reasons else "")
    )
    if stats.failed:
        raise CliError(f"{stats.failed} messages were not confirmed by Kafka")


@importers_app.command("add-car")
def add_car(
    car_ids: Annotated[list[str], typer.Argument(help="car ids (they become MQTT usernames)")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            envvar="FLEET_CAR_PASSWORD",
            help="the cars' MQTT password (prompted, or $FLEET_CAR_PASSWORD); never logged",
        ),
    ],
) -> None:
    """Give cars MQTT accounts on the local stack's Mosquitto: each may publish only as itself."""
    from fleet.stack.services import Mosquitto
    from ingest.validation import check_car_id

    settings = load_settings()
    if settings.is_external("mosquitto"):
        raise CliError("Mosquitto is external (mqtt.host is set): add accounts on that broker")
    reserved = {settings.mqtt.username, settings.mqtt.gateway_username}
    for car_id in car_ids:
        bad = check_car_id(car_id, reserved)
        if bad:
            raise typer.BadParameter(bad.detail, param_hint="CAR_IDS")
    mosquitto = Mosquitto(settings)
    if not mosquitto.password_file.exists():
        raise CliError("the local Mosquitto has no password file yet: run `fleet stack up`")
    for car_id in car_ids:
        mosquitto.add_user(car_id, password)
    try:
        mosquitto.reload()
    except RuntimeError:
        typer.echo("mosquitto is not running: the accounts apply from its next start")
    typer.echo(f"accounts ready: {', '.join(car_ids)}")
