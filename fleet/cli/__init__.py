"""The `fleet` command: one entry point, a subcommand per job, `--help` on each."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from fleet.cli.bench import bench_app
from fleet.cli.commands import commands_app
from fleet.cli.context import CliError, load_settings
from fleet.cli.demo import demo_app
from fleet.cli.history import history_app, show
from fleet.cli.ingest import ingest_app
from fleet.cli.lake import lake_app
from fleet.cli.ml import ml_app
from fleet.cli.run import run_app
from fleet.cli.stack import stack_app
from fleet.cli.topics import config_app, topics_app
from fleet.cli.twin import twin_app
from fleet.cli.ui import ui_app

app = typer.Typer(
    name="fleet",
    help="Streaming digital twins for connected-car fleets: MQTT -> Kafka -> MongoDB, GCS, ML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(config_app, name="config")
app.add_typer(twin_app, name="twin")
app.add_typer(ingest_app)
app.add_typer(ui_app, name="ui")
app.add_typer(lake_app, name="lake")
history_app.command("show")(show)
app.add_typer(history_app, name="history")
app.add_typer(ml_app, name="ml")
app.add_typer(commands_app, name="commands")
app.add_typer(run_app)
app.add_typer(demo_app)
app.add_typer(bench_app)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML settings file (default: $FLEET_CONFIG or ./fleet.toml)",
            dir_okay=False,
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR (FLEET_LOG_LEVEL)")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(help="console, json or auto (FLEET_LOG_FORMAT)")
    ] = None,
) -> None:
    if config is not None:
        os.environ["FLEET_CONFIG"] = str(config)
    if log_level is not None:
        os.environ["FLEET_LOG_LEVEL"] = log_level.upper()
    if log_format is not None:
        os.environ["FLEET_LOG_FORMAT"] = log_format
    ctx.obj = load_settings


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every user error becomes one line on stderr and a non-zero exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="fleet", standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):
        print("fleet: interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # click's usage errors, as vendored by typer
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "fleet"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"{where}: error: {message} (see '{where} --help')", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except (CliError, FileNotFoundError) as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        print(f"fleet: error: setting {field}: {first['msg']}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
