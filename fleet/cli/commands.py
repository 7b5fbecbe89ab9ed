"""`fleet twin set`, `fleet twin rollout` and `fleet commands run`: desired state and commands.

`set` and `rollout` belong with the twin's other commands, so they are added to `twin_app`
here (importing this module registers them); `fleet commands run` is the MQTT command service.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import typer
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.table import Table

from fleet.cli.context import CliError, load_settings
from fleet.cli.twin import twin_app
from fleet.service import Shutdown

commands_app = typer.Typer(
    help="Commands to cars: the service that sends desired-state changes over MQTT.",
    no_args_is_help=True,
)
console = Console()


def _assignment(text: str, hint: str) -> tuple[str, Any]:
    from twin.desired import parse_assignment

    try:
        return parse_assignment(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None


def _wait(settings: Any, twins: Any, commands: list[dict[str, Any]], timeout: float) -> None:
    """Wait until the projector logged an outcome for every command; report refusals."""
    from fleet.waiting import DeadlineExceeded, wait_for
    from twin.commands import outcomes

    def all_done() -> dict[str, dict[str, Any]]:
        found = outcomes(twins, commands)
        return found if len(found) == len(commands) else {}

    try:
        found = wait_for(all_done, timeout, "the projector", interval=0.25)
    except DeadlineExceeded:
        seen = len(outcomes(twins, commands))
        raise CliError(
            f"sent, but the projector applied only {seen} of {len(commands)} commands within "
            f"{timeout:.0f}s (is `fleet twin run` running?)"
        ) from None
    refused = [e for e in found.values() if e["outcome"] == "refused"]
    if len(commands) == 1:
        entry = next(iter(found.values()))
        car = commands[0]["car_id"]
        if refused:
            raise CliError(f"{car}: refused: {entry['reason']}")
        typer.echo(f"{car}: applied (desired version {entry['version']})")
        return
    typer.echo(f"{len(found) - len(refused)} applied, {len(refused)} refused")
    if refused:
        cars = {c["command_id"]: c["car_id"] for c in commands}
        for entry in refused[:20]:
            typer.echo(f"  {cars[entry['command_id']]}: {entry['reason']}", err=True)
        raise CliError(f"{len(refused)} of {len(commands)} commands were refused")


@twin_app.command("set")
def set_(  # noqa: PLR0917 (typer options)
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="[CAR] PROPERTY=VALUE",
            help="CAR PROPERTY=VALUE, or PROPERTY=VALUE with --where/--all",
        ),
    ],
    where: Annotated[
        list[str] | None,
        typer.Option(help="fleet-wide: cars reporting PROPERTY=VALUE (repeat to combine)"),
    ] = None,
    all_cars: Annotated[bool, typer.Option("--all", help="fleet-wide: every car")] = False,
    expect_version: Annotated[
        int | None,
        typer.Option(min=0, help="refuse unless the car's desired state is at this version"),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="wait for the projector to apply (or refuse) the commands")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0, help="seconds --wait waits")] = 30.0,
) -> None:
    """Set a car's desired state (commands go to Kafka; the projector applies them).

    Examples: `fleet twin set car7 firmware=2000 --expect-version 3 --wait`;
    `fleet twin set --where firmware=1000 firmware=2000` (every car reporting 1000).
    """
    from twin import commands as cmds
    from twin import queries

    fleet_wide = bool(where) or all_cars
    if len(args) != (1 if fleet_wide else 2):
        raise typer.BadParameter(
            "give PROPERTY=VALUE with --where/--all, or CAR PROPERTY=VALUE", param_hint="ARGS"
        )
    if fleet_wide and expect_version is not None:
        raise typer.BadParameter(
            "fleet-wide commands expect each car's current version", param_hint="--expect-version"
        )
    name, value = _assignment(args[-1], "PROPERTY=VALUE")
    filters = dict(_assignment(w, "--where") for w in where or [])
    settings = load_settings()
    twins = queries.twins(settings)
    try:
        if fleet_wide:
            rollout_id, commands = cmds.for_fleet(twins, name, value, filters)
        else:
            commands = [cmds.for_car(twins, args[0], name, value, expect_version)]
    except cmds.CommandRefused as exc:
        raise CliError(str(exc)) from None
    except PyMongoError as exc:
        raise CliError(f"MongoDB is not reachable: {exc}") from None
    if not commands:
        typer.echo(f"no car to change: none matches, or they all have {name}={value} already")
        return
    try:
        cmds.send(settings, commands)
    except cmds.CommandRefused as exc:
        raise CliError(str(exc)) from None
    if fleet_wide:
        typer.echo(
            f"rollout {rollout_id}: {name}={value} sent to {len(commands)} cars; "
            f"follow it with `fleet twin rollout --rollout {rollout_id}`"
        )
    else:
        cmd = commands[0]
        typer.echo(f"{cmd['car_id']}: {name}={value} sent (command {cmd['command_id']})")
    if wait:
        _wait(settings, twins, commands, timeout)


@twin_app.command("rollout")
def rollout(
    prop: Annotated[str, typer.Option("--property", help="the desired property")] = "firmware",
    rollout_id: Annotated[str | None, typer.Option("--rollout", help="one rollout's id")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="seconds until an unconverged car counts as failed (twin.rollout_timeout)"
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="cars listed per status")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rollout progress: cars done, pending and failed (failed ones listed)."""
    from twin import queries
    from twin.rollout import rollout_progress

    settings = load_settings()
    seconds = settings.twin.rollout_timeout if timeout is None else timeout
    try:
        progress = rollout_progress(
            queries.twins(settings), prop, rollout_id, timedelta(seconds=seconds), limit=limit
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--property") from None
    except PyMongoError as exc:
        raise CliError(f"MongoDB is not reachable: {exc}") from None
    if as_json:
        typer.echo(json.dumps({"counts": progress.counts, "cars": progress.cars}, default=str))
        return
    counts = progress.counts
    typer.echo(
        f"{prop}{' rollout ' + rollout_id if rollout_id else ''}: {counts['done']} done, "
        f"{counts['pending']} pending, {counts['failed']} failed of {progress.total} cars"
    )
    if progress.cars["failed"]:
        table = Table("failed car", "desired", "reported", "since", "last seen")
        for row in progress.cars["failed"]:
            table.add_row(
                row["car"],
                str(row["desired"]),
                str(row["reported"]),
                str(row["since"]),
                str(row["last_seen"]),
            )
        console.print(table)


@commands_app.command("run")
def run() -> None:
    """Send accepted desired-state changes to the cars (MQTT QoS 1) until SIGTERM/Ctrl-C."""
    from twin.command_service import CommandService

    settings = load_settings()
    CommandService(settings).run(Shutdown().install())
