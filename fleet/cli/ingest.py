"""`fleet bridge`, `fleet simulate` and `fleet ingest ...`: getting readings into Kafka."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.context import CliError, load_settings, simulation_config
from fleet.cli.fleet_options import FailingShareOpt, ProfileOpt

ingest_app = typer.Typer()


class Output(StrEnum):
    mqtt = "mqtt"
    kafka = "kafka"
    csv = "csv"


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
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="bridge processes sharing the subscription, one core each; client ids "
            "<id>-0..N-1, metrics ports <port>+0..N-1 (FLEET_INGEST_BRIDGE_PROCESSES)",
        ),
    ] = None,
) -> None:
    """Carry readings from MQTT to Kafka; a reading is acknowledged once Kafka has it.

    Runs until SIGTERM/Ctrl-C, then stops taking messages, flushes, acknowledges and exits.
    """
    import socket

    from fleet.service import Shutdown, serve_metrics
    from ingest.bridge import Bridge, KafkaFatal
    from ingest.bridge_pool import run_pool

    settings = load_settings()
    shutdown = Shutdown().install()
    port = settings.ingest.metrics_port if metrics_port is None else metrics_port
    processes = settings.ingest.bridge_processes if processes is None else processes
    if processes > 1:
        base = (
            client_id or settings.ingest.bridge_client_id or f"fleet-bridge-{socket.gethostname()}"
        )
        code = run_pool(processes, base, port, shutdown)
        if code:
            raise typer.Exit(code)
        return
    serve_metrics(port)
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


def _start_time_ms(text: str) -> int:
    """`now`, seconds since the epoch, or an ISO-8601 time (UTC unless it says otherwise)."""
    from datetime import UTC, datetime

    if text == "now":
        return int(time.time() * 1000)
    try:
        return int(float(text) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            "use `now`, epoch seconds or ISO-8601", param_hint="--start"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@ingest_app.command("simulate")
def simulate(  # noqa: PLR0915, PLR0917 (a command with many options)
    output: Annotated[Output, typer.Option("--output", "-o", help="where readings go")] = (
        Output.mqtt
    ),
    cars: Annotated[int, typer.Option(min=1, help="fleet size")] = 100,
    interval: Annotated[float, typer.Option(min=0.001, help="seconds between readings")] = 10.0,
    steps: Annotated[int | None, typer.Option(min=1, help="readings per car")] = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="simulated seconds (instead of --steps)")
    ] = None,
    profile: ProfileOpt = "fleet",
    failing_share: FailingShareOpt = None,
    repair_hours: Annotated[
        float | None,
        typer.Option(help="fleet: mean hours from a failure to its repair [default: 6]"),
    ] = None,
    failure_rate: Annotated[
        float | None,
        typer.Option(min=0, help="seed: multiplies every per-step failure chance [default: 1]"),
    ] = None,
    start: Annotated[str, typer.Option(help="simulated start: now, epoch s or ISO-8601")] = "now",
    time_lapse: Annotated[
        float,
        typer.Option(min=0, help="simulated seconds per wall second; 1 = real time, 0 = max"),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same readings)")] = 42,
    qos: Annotated[int, typer.Option(min=0, max=1, help="MQTT QoS")] = 1,
    connections: Annotated[int, typer.Option(min=1, help="MQTT connections")] = 4,
    file: Annotated[Path | None, typer.Option(help="CSV output file")] = None,
    labels: Annotated[bool, typer.Option(help="CSV: add a failure_occurred column")] = False,
    obey_commands: Annotated[
        bool, typer.Option(help="MQTT: cars apply commands from vehicles/commands/<car>")
    ] = False,
    update_delay: Annotated[
        float, typer.Option(min=0, help="seconds a car takes to install an update")
    ] = 5.0,
    update_failures: Annotated[
        float, typer.Option(min=0, max=1, help="share of cars whose update fails")
    ] = 0.0,
    update_offline: Annotated[
        float, typer.Option(min=0, max=1, help="share of cars that go offline for good on one")
    ] = 0.0,
) -> None:
    """Simulate a fleet (the seed's car physics and failure modes) into MQTT, Kafka or CSV.

    Examples: `fleet simulate --cars 100000 --duration 600 --time-lapse 1` (the original
    demo's load in real time over MQTT); `fleet simulate -o kafka --cars 1000 --steps 1000`;
    `fleet simulate -o csv --file cars.csv --cars 100 --steps 100 --start 1567606196
    --profile seed` (the seed's own rules).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fleet.service import Shutdown
    from ingest.outputs import CsvSink, KafkaSink, MqttSink, Sink
    from ingest.simulate import run_simulation
    from ingest.simulator import FleetSimulator

    if steps is None:
        steps = max(1, round(duration / interval)) if duration is not None else 1
    elif duration is not None:
        raise typer.BadParameter("give --steps or --duration, not both", param_hint="--steps")
    if output is Output.csv and file is None:
        raise typer.BadParameter("--output csv needs --file", param_hint="--file")
    if obey_commands and output is not Output.mqtt:
        raise typer.BadParameter("cars hear commands over MQTT: use -o mqtt", param_hint="-o")
    config = simulation_config(
        cars=cars,
        interval_ms=max(1, round(interval * 1000)),
        start_time_ms=_start_time_ms(start),
        profile=profile,
        failing_share=failing_share,
        repair_hours=repair_hours,
        failure_rate=failure_rate,
        seed=seed,
    )
    settings = load_settings()
    shutdown = Shutdown().install()
    sink: Sink
    try:
        if output is Output.kafka:
            sink = KafkaSink(settings)
        elif output is Output.mqtt:
            sink = MqttSink(settings, qos=qos, connections=connections)
        else:
            assert file is not None
            sink = CsvSink(file, labels=labels)
    except Exception as exc:
        raise CliError(f"cannot open the {output.value} output: {exc}") from None
    simulator = FleetSimulator(config)
    obeying = None
    if obey_commands:
        from ingest.car_commands import CarCommands, ObeyConfig

        obeying = CarCommands(
            simulator.car_ids, ObeyConfig(update_delay, update_failures, update_offline, seed)
        )
        obeying.connect(settings)
    total = cars * steps
    started = time.monotonic()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("sent {task.fields[sent]:,}  errors {task.fields[errors]:,}"),
        TextColumn("{task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(),
        transient=False,
    )

    with progress:
        task = progress.add_task(f"{output.value}", total=total, sent=0, errors=0, rate=0.0)

        def update() -> None:
            sink.poll()
            elapsed = max(time.monotonic() - started, 1e-6)
            progress.update(
                task,
                completed=sink.submitted,
                sent=sink.sent,
                errors=sink.errors,
                rate=sink.sent / elapsed,
            )

        run_simulation(
            simulator,
            steps,
            sink,
            time_lapse=time_lapse,
            on_chunk=update,
            stop_requested=shutdown.wait,
            transform=obeying.apply if obeying is not None else None,
        )
        sink.close()
        update()
    elapsed = time.monotonic() - started
    if obeying is not None:
        obeying.close()
        typer.echo(
            f"commands: {obeying.heard} heard, {len(obeying.updated)} cars updated, "
            f"{len(obeying.failed)} failed, {len(obeying.offline)} went offline"
        )
    typer.echo(
        f"{sink.sent:,} readings of {cars:,} cars sent to {output.value} in {elapsed:.1f}s "
        f"({sink.sent / max(elapsed, 1e-6):,.0f}/s), {sink.errors:,} errors"
    )
    if sink.errors:
        raise CliError(f"{sink.errors} readings were not confirmed")
