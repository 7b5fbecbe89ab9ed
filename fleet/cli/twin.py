"""`fleet twin`: run the projector, query the twins, rebuild them from Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from fleet.cli.context import CliError, load_settings
from fleet.cli.history import show
from fleet.service import Shutdown, quiet_gc, serve_metrics

twin_app = typer.Typer(
    help="Digital twins: one MongoDB document per car, projected from Kafka.",
    no_args_is_help=True,
)
console = Console()


def _json(value: Any) -> str:
    return json.dumps(
        value, indent=2, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v)
    )


@twin_app.command()
def run(
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="events per batch (FLEET_TWIN_BATCH_SIZE)")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port, 0 = none (FLEET_TWIN_METRICS_PORT)")
    ] = None,
) -> None:
    """Project telemetry and anomaly scores onto the twins until SIGTERM/Ctrl-C."""
    from twin.projector import Projector

    settings = load_settings()
    updates: dict[str, Any] = {}
    if batch_size is not None:
        updates["batch_size"] = batch_size
    if metrics_port is not None:
        updates["metrics_port"] = metrics_port
    if updates:
        settings = settings.model_copy(update={"twin": settings.twin.model_copy(update=updates)})
    serve_metrics(settings.twin.metrics_port)
    projector = Projector(settings, Shutdown().install())
    quiet_gc()
    projector.run()


# `fleet twin history CAR --since 1h`: the same as `fleet history show`.
twin_app.command("history")(show)


def _collection() -> Any:
    from twin import queries

    return queries.twins(load_settings())


@twin_app.command()
def get(car: Annotated[str, typer.Argument(help="car id, e.g. car7")]) -> None:
    """One car's twin as JSON (its readings over time: `fleet twin history CAR`)."""
    from twin import queries

    try:
        twin = queries.get_twin(_collection(), car)
    except PyMongoError as exc:
        raise CliError(f"MongoDB is not reachable: {exc}") from None
    if twin is None:
        raise CliError(f"no twin for car {car!r}")
    twin.pop("recent_readings", None)  # bookkeeping: packed reading identities
    typer.echo(_json(twin))


def _age(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = (datetime.now(UTC) - value).total_seconds()
    return f"{seconds / 60:.0f} min ago" if abs(seconds) < 86_400 else value.isoformat()


@twin_app.command("list")
def list_(  # noqa: PLR0917 (typer options)
    anomalous: Annotated[
        bool | None, typer.Option("--anomalous/--not-anomalous", help="anomaly verdict")
    ] = None,
    condition: Annotated[
        str | None, typer.Option(help="a health condition, e.g. tire_pressure_low")
    ] = None,
    not_seen_for: Annotated[
        float | None, typer.Option(help="minutes since the last reading (event time)")
    ] = None,
    firmware: Annotated[int | None, typer.Option(help="control unit firmware version")] = None,
    sort: Annotated[str, typer.Option(help="car, anomaly or last_seen")] = "car",
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Twins matching all the given filters."""
    from twin import queries
    from twin.fold import condition_key
    from twin.health import CONDITION_NAMES

    if condition is not None and condition not in CONDITION_NAMES:
        raise typer.BadParameter(
            f"choose from {', '.join(CONDITION_NAMES)}", param_hint="--condition"
        )
    if sort not in queries.SORTS:
        raise typer.BadParameter(f"choose from {', '.join(queries.SORTS)}", param_hint="--sort")
    since = None
    if not_seen_for is not None:
        since = datetime.now(UTC) - timedelta(minutes=not_seen_for)
    where = queries.TwinFilter(anomalous, condition, since, firmware)
    try:
        rows = queries.list_twins(_collection(), where, sort=sort, limit=limit)
    except PyMongoError as exc:
        raise CliError(f"MongoDB is not reachable: {exc}") from None
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
        return
    table = Table("car", "last seen", "health", "anomaly", "firmware", "events")
    for row in rows:
        anomaly = row.get("anomaly") or {}
        firmware_value = row["reported"].get("control_unit_firmware", {}).get("value", "")
        table.add_row(
            row["_id"],
            _age(row.get("last_seen")),
            ", ".join(condition_key(c) for c in row["health"]["conditions"])
            or row["health"]["status"],
            f"{anomaly['score']:.3f}{' !' if anomaly['is_anomaly'] else ''}" if anomaly else "",
            str(firmware_value),
            str(row["counters"]["events_applied"]),
        )
    console.print(table)
    console.print(f"{len(rows)} twin(s)")


@twin_app.command()
def rebuild() -> None:
    """Replay the topics from the beginning into a fresh collection, then swap it in."""
    from twin.rebuild import RebuildAborted
    from twin.rebuild import rebuild as do_rebuild

    settings = load_settings()
    shutdown = Shutdown().install()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("replaying", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            report = do_rebuild(settings, progress, shutdown)
        except RebuildAborted as exc:
            raise CliError(str(exc)) from None
    typer.echo(
        f"rebuilt {report.twins} twins from {report.replayed} events "
        f"(+{report.caught_up} caught up after the swap) in {report.seconds:.1f}s"
    )
