"""`fleet stack`: start, stop and inspect the local servers."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fleet.cli.context import CliError, load_settings
from fleet.stack import PrerequisiteMissing, ServiceFailed, Stack
from fleet.stack.stack import tail

stack_app = typer.Typer(
    help="The local stack: Kafka, MongoDB-wire server, Mosquitto, GCS emulator (no Docker).",
    no_args_is_help=True,
)
console = Console(stderr=True)
SERVICES = ("kafka", "mongodb", "mosquitto", "gcs")

Only = Annotated[
    list[str] | None,
    typer.Argument(
        help=f"services to act on (default: all): {', '.join(SERVICES)}", show_default=False
    ),
]


def _stack(only: list[str] | None) -> Stack:
    unknown = set(only or ()) - set(SERVICES)
    if unknown:
        raise typer.BadParameter(
            f"unknown service {', '.join(sorted(unknown))}; choose from {', '.join(SERVICES)}"
        )
    return Stack(load_settings(), only)


def _progress(name: str, state: str) -> None:
    console.print(f"[bold]{name:<10}[/bold] {state}", soft_wrap=True)  # a notice is one line


@stack_app.command()
def up(only: Only = None) -> None:
    """Start the stack (idempotent) and wait until every service is healthy; create topics."""
    stack = _stack(only)
    started = time.monotonic()
    try:
        stack.up(_progress)
    except (PrerequisiteMissing, ServiceFailed) as exc:
        raise CliError(str(exc)) from None
    console.print(
        f"stack is up in {time.monotonic() - started:.1f}s (data and logs in {stack.home})"
    )


@stack_app.command()
def install(only: Only = None) -> None:
    """Check prerequisites, fetch Kafka's jars and build secantusd-rs (once), start nothing."""
    stack = _stack(only)
    try:
        stack.install(_progress)
    except (PrerequisiteMissing, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    console.print(f"stack prerequisites present; cache: {stack.settings.stack.cache.resolve()}")


@stack_app.command()
def down(only: Only = None) -> None:
    """Stop exactly the processes `up` started."""
    _stack(only).down(_progress)


@stack_app.command()
def status(
    only: Only = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show each service: state, pid, address, health. Exit code 3 if any is not healthy."""
    statuses = _stack(only).status()
    if as_json:
        typer.echo(json.dumps([s.__dict__ for s in statuses], indent=2))
    else:
        table = Table("service", "state", "server", "pid", "address", "healthy")
        for s in statuses:
            table.add_row(
                s.name,
                s.state,
                s.server or "-",
                str(s.pid or "-"),
                s.address,
                "[green]yes[/green]" if s.healthy else "[red]no[/red]",
            )
        Console().print(table)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(3)


@stack_app.command()
def logs(
    service: Annotated[str, typer.Argument(help=f"one of {', '.join(SERVICES)}")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=1)] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
) -> None:
    """Print the last lines of a service's log."""
    path = _stack([service]).log_file(service)
    typer.echo(tail(path, lines))
    if follow:
        with path.open(errors="replace") as log:
            log.seek(0, 2)
            while True:
                line = log.readline()
                if line:
                    typer.echo(line, nl=False)
                else:
                    time.sleep(0.25)  # polling a file for a human reader
