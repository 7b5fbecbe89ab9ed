"""What every subcommand shares: settings (read once, after global options) and user errors."""

from __future__ import annotations

from functools import cache

from fleet.logs import configure_logging
from fleet.settings import Settings


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


@cache
def load_settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log)
    return settings
