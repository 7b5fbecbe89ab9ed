"""`fleet history`: each car's readings and scores in a time-series collection."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.table import Table

from fleet.cli.context import CliError, load_settings
from fleet.contract import SENSORS
from fleet.service import Shutdown, quiet_gc

history_app = typer.Typer(
    help="Per-car history: every reading and score in a MongoDB time-series collection.",
    no_args_is_help=True,
)
console = Console()

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_since(text: str) -> timedelta:
    """`90s`, `15m`, `1h`, `7d` (a number and a unit) as a time span."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not found:
        raise typer.BadParameter(f"{text!r} is not a span like 90s, 15m, 1h or 7d")
    return timedelta(seconds=float(found[1]) * _UNITS[found[2]])


@history_app.command()
def run() -> None:
    """Write every reading and score into the history collection until SIGTERM/Ctrl-C."""
    from twin.history import HistoryProjector

    history = HistoryProjector(load_settings(), Shutdown().install())
    quiet_gc()
    history.run()


def show(
    car: Annotated[str, typer.Argument(help="car id, e.g. car7")],
    since: Annotated[str, typer.Option(help="how far back: 90s, 15m, 1h, 7d")] = "1h",
    sensors: Annotated[
        str, typer.Option(help="comma-separated sensors to show")
    ] = "speed,coolant_temp,battery_percentage",
    scores: Annotated[bool, typer.Option(help="show the anomaly scores too")] = True,
) -> None:
    """One car's readings (and scores) over a recent span, oldest first (before the history
    collection's retention, from the lake)."""
    from google.api_core.exceptions import GoogleAPIError

    from fleet import clients
    from lake.history import car_history
    from lake.reader import Lake
    from twin.history import Kind

    span = parse_since(since)
    columns = [s.strip() for s in sensors.split(",") if s.strip()]
    unknown = sorted(set(columns) - set(SENSORS))
    if unknown:
        raise typer.BadParameter(f"unknown sensors {unknown}; choose from {', '.join(SENSORS)}")
    settings = load_settings()
    kinds: tuple[Kind, ...] = ("reading", "score") if scores else ("reading",)
    try:
        rows = car_history(
            clients.mongo_database(settings),
            settings.twin.history_collection,
            car,
            datetime.now(UTC) - span,
            kinds=kinds,
            lake=Lake(settings),
            retention_days=settings.twin.history_retention_days,
            topics={"telemetry": settings.topics.telemetry, "anomalies": settings.topics.anomalies},
        )
    except PyMongoError as exc:
        raise CliError(f"MongoDB is not reachable: {exc}") from None
    except GoogleAPIError as exc:
        raise CliError(f"the lake is not reachable: {exc}") from None
    table = Table("event time (UTC)", "kind", "seq", *columns, "score", title=f"{car}, {since}")
    for row in rows:
        reading = row["kind"] == "reading"
        values = [f"{row[c]:g}" if reading else "" for c in columns]
        score = "" if reading else f"{row['score']:.4g}{' !' if row['is_anomaly'] else ''}"
        when = row["t"].strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, row["kind"], str(row["seq"]), *values, score)
    console.print(table)
    readings = sum(r["kind"] == "reading" for r in rows)
    console.print(f"{readings} readings, {len(rows) - readings} scores")
