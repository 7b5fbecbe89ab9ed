"""What every subcommand shares: settings (read once, after global options) and user errors."""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

import typer

from fleet.logs import configure_logging
from fleet.settings import Settings

if TYPE_CHECKING:
    from ingest.simulator import SimulationConfig


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


@cache
def load_settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log)
    return settings


def simulation_config(**options: Any) -> SimulationConfig:
    """The simulator's config from command-line options (None: the profile's default); an
    option the profile does not take, or a bad value, is a one-line usage error."""
    from ingest.simulator import SimulationConfig

    given = {name: value for name, value in options.items() if value is not None}
    try:
        return SimulationConfig(**given)
    except ValueError as exc:
        # Name the options as they are typed: failure_rate -> --failure-rate.
        message = re.sub(
            r"\b([a-z]+(?:_[a-z]+)+)\b", lambda m: "--" + m[1].replace("_", "-"), str(exc)
        )
        raise typer.BadParameter(message) from None
