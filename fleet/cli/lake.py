"""`fleet lake`: run the archiver, and list, summarize and export the GCS data lake."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fleet.cli.context import CliError, load_settings

lake_app = typer.Typer(help="The GCS data lake: archiver and batch analysis.", no_args_is_help=True)

FromOpt = Annotated[
    datetime | None, typer.Option("--from", help="event time from (UTC, inclusive)")
]
ToOpt = Annotated[datetime | None, typer.Option("--to", help="event time to (UTC, exclusive)")]
CarsOpt = Annotated[str | None, typer.Option(help="comma-separated car ids")]
DatasetOpt = Annotated[str, typer.Option(help="telemetry or anomalies")]


def _cars(cars: str | None) -> list[str] | None:
    return [c.strip() for c in cars.split(",") if c.strip()] if cars else None


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _lake():  # type: ignore[no-untyped-def]
    from lake.reader import Lake

    settings = load_settings()
    lake = Lake(settings)
    try:
        if not lake.bucket.exists():
            raise CliError(
                f"bucket {settings.gcs.bucket} does not exist at {settings.gcs_endpoint}"
            )
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"GCS at {settings.gcs_endpoint} is not reachable: {exc}") from None
    return lake


@lake_app.command("run")
def run() -> None:
    """Archive the telemetry and anomaly topics into the bucket, each event exactly once."""
    from fleet.service import Shutdown, quiet_gc, serve_metrics
    from lake.archiver import Archiver

    settings = load_settings()
    serve_metrics(settings.lake.metrics_port)
    archiver = Archiver(settings, Shutdown().install())
    quiet_gc()
    archiver.run()


@lake_app.command("ls")
def ls(
    start: FromOpt = None,
    end: ToOpt = None,
    cars: CarsOpt = None,
    dataset: DatasetOpt = "telemetry",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List the lake's objects (only the date/hour prefixes the time range needs)."""
    try:
        objects = _lake().objects(dataset, start=_utc(start), end=_utc(end), cars=_cars(cars))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        for o in objects:
            typer.echo(json.dumps({"name": o.name, "size": o.size, "records": o.records}))
        return
    table = Table("object", "records", "bytes", "event time from", "to")
    for o in objects:
        table.add_row(o.name, str(o.records), str(o.size), _iso(o.min_time), _iso(o.max_time))
    Console().print(table)
    typer.echo(f"{len(objects)} objects, {sum(o.records or 0 for o in objects)} records")


def _iso(ms: int | None) -> str:
    return (
        "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    )


@lake_app.command("stats")
def stats(
    start: FromOpt = None,
    end: ToOpt = None,
    cars: CarsOpt = None,
    by: Annotated[str, typer.Option(help="hour or day")] = "hour",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Events per day/hour, cars, and failure-mode incidence from the simulator's labels."""
    from lake import stats as lake_stats

    if by not in ("hour", "day"):
        raise typer.BadParameter("--by must be hour or day")
    frame = _lake().read_polars(
        "telemetry",
        start=_utc(start),
        end=_utc(end),
        cars=_cars(cars),
        columns=["car_id", "event_time", "failure_occurred", "failure_modes"],
    )
    volume = (lake_stats.events_per_hour if by == "hour" else lake_stats.events_per_day)(frame)
    failures = lake_stats.failure_incidence(frame)
    head = lake_stats.summary(frame)
    if as_json:
        typer.echo(
            json.dumps(
                head | {"volume": volume.to_dicts(), "failure_modes": failures.to_dicts()},
                default=str,
            )
        )
        return
    console = Console()
    console.print(
        f"{head['events']} events, {head['cars']} cars, "
        f"{_iso(head['first_event_time'])} .. {_iso(head['last_event_time'])}"
    )
    for title, frame_ in (("events", volume), ("failure modes (labelled events)", failures)):
        table = Table(*frame_.columns, title=title)
        for row in frame_.iter_rows():
            table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
        console.print(table)


@lake_app.command("export")
def export(  # noqa: PLR0917 (a Typer command: options are parameters)
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write")],
    start: FromOpt = None,
    end: ToOpt = None,
    cars: CarsOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    dataset: DatasetOpt = "telemetry",
    columns: Annotated[str | None, typer.Option(help="comma-separated columns")] = None,
) -> None:
    """Export events of a time range and cars to Parquet or CSV."""
    import polars as pl

    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("--format must be parquet or csv")
    cols = [c.strip() for c in columns.split(",")] if columns else None
    try:
        frame = _lake().read_polars(
            dataset, start=_utc(start), end=_utc(end), cars=_cars(cars), columns=cols
        )
    except pl.exceptions.ColumnNotFoundError as exc:
        raise typer.BadParameter(f"unknown column: {exc}") from None
    if fmt == "parquet":
        frame.write_parquet(output)
    else:
        lists = [n for n, t in frame.schema.items() if isinstance(t, pl.List)]
        flat = frame.with_columns(pl.col(n).list.join("|") for n in lists)
        nested = [n for n, t in flat.schema.items() if isinstance(t, pl.List | pl.Struct)]
        flat.with_columns(pl.col(n).cast(pl.String) for n in nested).write_csv(output)
    typer.echo(f"wrote {frame.height} rows to {output}")
