"""`fleet run SERVICE`: any long-running service of the platform, in the foreground.

For deployments (one container or systemd unit per service) and for `fleet demo`, which
starts each service as a `fleet run ...` child. Every service reads the usual settings
(environment, `fleet.toml`), logs to stderr and stops cleanly on SIGTERM/Ctrl-C.

Adding a service is one entry in ``SERVICES``: its name and the `fleet` command that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer


@dataclass(frozen=True)
class ServiceSpec:
    command: tuple[str, ...]  # the `fleet` subcommand that runs it
    summary: str


SERVICES: dict[str, ServiceSpec] = {
    "bridge": ServiceSpec(("bridge",), "MQTT -> Kafka: readings acknowledged once Kafka has them"),
    "twin": ServiceSpec(("twin", "run"), "Kafka -> one MongoDB twin per car"),
    "history": ServiceSpec(("history", "run"), "Kafka -> every reading and score, time series"),
    "lake": ServiceSpec(("lake", "run"), "Kafka -> Avro objects in the GCS data lake"),
    "scorer": ServiceSpec(("ml", "score"), "Kafka -> anomaly scores with the promoted model"),
    "commands": ServiceSpec(("commands", "run"), "desired-state changes -> cars over MQTT (QoS 1)"),
    "ui": ServiceSpec(("ui",), "the Streamlit fleet explorer (HTTP, settings ui.port)"),
}

run_app = typer.Typer()


def service_names() -> str:
    return ", ".join(SERVICES)


@run_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Run one service in the foreground until SIGTERM/Ctrl-C.\n\n\b\n"
    + "\n".join(
        f"{name:<8} {spec.summary} (fleet {' '.join(spec.command)})"
        for name, spec in SERVICES.items()
    )
    + "\n\nOptions after SERVICE go to the service, e.g. `fleet run bridge --client-id b2`.",
)
def run(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help=f"one of: {', '.join(SERVICES)}")],
) -> None:
    spec = SERVICES.get(service)
    if spec is None:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {service_names()}")
    from fleet.cli import app

    # The same command a user would type, dispatched in this process (no second start-up);
    # its own Shutdown handles SIGTERM. Errors propagate to `fleet.cli.main` as usual.
    command = typer.main.get_command(app)
    command.main(args=[*spec.command, *ctx.args], prog_name="fleet", standalone_mode=False)
