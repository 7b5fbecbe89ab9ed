"""`fleet ui`: start the Streamlit fleet explorer."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.context import CliError, load_settings

ui_app = typer.Typer(help="The Streamlit fleet explorer (read-only).", no_args_is_help=False)


def streamlit_command(app: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
        "--theme.base",
        "light",
        "--theme.primaryColor",
        "#1f6feb",
    ]


@ui_app.callback(invoke_without_command=True)
def ui(
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0 for all)")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="port (default: settings ui.port)")] = None,
) -> None:
    """Start the explorer on http://HOST:PORT (Ctrl-C stops it)."""
    try:
        import streamlit  # noqa: F401
    except ImportError as exc:
        raise CliError("the explorer needs Streamlit: pip install 'fleet-twin[ui]'") from exc
    import ui as ui_package

    settings = load_settings()
    app = Path(ui_package.__file__).parent / "app.py"
    command = streamlit_command(app, host, port if port is not None else settings.ui.port)
    # Replace this process: signals (Ctrl-C, SIGTERM) then reach Streamlit directly.
    os.execv(command[0], command)
