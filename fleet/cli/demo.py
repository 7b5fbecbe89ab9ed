"""`fleet demo`: the whole platform with one command (see fleet.demo.platform)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from fleet.cli.context import CliError, load_settings, simulation_config
from fleet.cli.fleet_options import FailingShareOpt, ProfileOpt
from fleet.demo.observe import Snapshot
from fleet.demo.platform import Demo, DemoFailed, DemoOptions, Reporter
from fleet.demo.supervisor import Child

demo_app = typer.Typer()


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


class RichReporter(Reporter):
    """Milestones as lines; on a terminal a live status panel below them, else a status line
    every ``plain_every`` seconds (logs, CI)."""

    def __init__(self, console: Console, train_after: int, plain_every: float = 15.0) -> None:
        self.console = console
        self.train_after = train_after
        self.plain_every = plain_every
        self.live: Live | None = None
        self._last_plain = 0.0
        self._last: tuple[Snapshot, list[Child], str] | None = None
        if console.is_terminal:
            self.live = Live(console=console, refresh_per_second=2, transient=True)
            self.live.start()

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def status(self, snapshot: Snapshot, children: list[Child], phase: str) -> None:
        self._last = (snapshot, children, phase)
        if self.live is not None:
            self.live.update(self._panel(snapshot, children, phase))
        elif time.monotonic() - self._last_plain >= self.plain_every:
            self._last_plain = time.monotonic()
            self.console.print(
                self._line(snapshot, children, phase), highlight=False, markup=False, soft_wrap=True
            )

    def close(self) -> None:
        """Stop the live panel, leaving its last state as one line."""
        if self.live is not None:
            self.live.stop()
            self.live = None
            if self._last is not None:
                line = self._line(*self._last)
                self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    @staticmethod
    def _line(s: Snapshot, children: list[Child], phase: str) -> str:
        states = " ".join(f"{c.name}={c.state}" for c in children)
        return (
            f"[{phase}] readings {_n(s.readings)}, twins {_n(s.twins)} "
            f"({_n(s.scored_twins)} scored), lake objects {_n(s.lake_objects)}, "
            f"model {s.model_version or '-'}, scores {_n(s.scores)}, "
            f"dead letters {_n(s.dead_letters)} | {states}"
        )

    def _panel(self, s: Snapshot, children: list[Child], phase: str) -> Group:
        figures = Table.grid(padding=(0, 2))
        figures.add_column(style="bold")
        figures.add_column(justify="right")
        figures.add_column()
        toward = ProgressBar(
            total=self.train_after, completed=min(s.readings or 0, self.train_after), width=30
        )
        figures.add_row("readings in Kafka", _n(s.readings), toward if not s.model_version else "")
        figures.add_row("twins in MongoDB", _n(s.twins), f"{_n(s.scored_twins)} with a score")
        figures.add_row("lake objects", _n(s.lake_objects), "")
        figures.add_row("promoted model", s.model_version or "-", f"{_n(s.scores)} scores")
        figures.add_row("dead letters", _n(s.dead_letters), "")
        services = Table("child", "state", "pid", "restarts", box=None, padding=(0, 2))
        for c in children:
            services.add_row(c.name, c.state, str(c.pid or "-"), str(c.restarts))
        return Group(f"[bold]{phase}[/bold]  (Ctrl-C stops everything)", figures, services)


@demo_app.command("demo")
def demo(  # noqa: PLR0917 (a command with many options)
    cars: Annotated[int, typer.Option(min=1, max=100_000, help="fleet size")] = 1000,
    interval: Annotated[
        float, typer.Option(min=0.01, help="simulated seconds between a car's readings")
    ] = 10.0,
    time_lapse: Annotated[
        float, typer.Option(min=0.1, help="simulated seconds per wall second (1 = real time)")
    ] = 10.0,
    steps: Annotated[
        int | None, typer.Option(min=1, help="readings per car (default: until stopped)")
    ] = None,
    profile: ProfileOpt = "fleet",
    failing_share: FailingShareOpt = None,
    failure_rate: Annotated[
        float | None,
        typer.Option(min=0, help="seed: failure-chance multiplier [default: 1]"),
    ] = None,
    train_after: Annotated[
        int, typer.Option(min=1, help="readings in Kafka before the first model is trained")
    ] = 20_000,
    epochs: Annotated[int, typer.Option(min=1, help="training epochs (both models)")] = 5,
    eval_cars: Annotated[int, typer.Option(min=0, help="held-out evaluation fleet")] = 200,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="start the explorer")] = True,
    ui_port: Annotated[int | None, typer.Option(help="explorer port (default ui.port)")] = None,
    keep_stack: Annotated[
        bool, typer.Option(help="leave the stack running at the end (else: stop what we started)")
    ] = False,
    stop_timeout: Annotated[
        float, typer.Option(min=1, help="seconds a child gets after SIGTERM before SIGKILL")
    ] = 60.0,
) -> None:
    """Run the whole platform: stack, services, a simulated fleet, a first model, the explorer.

    Ctrl-C (or SIGTERM) stops everything cleanly. Children's logs: <stack home>/demo/*.log.
    """
    from fleet.service import Shutdown

    # Refuse bad simulator options now, not from a child process minutes later.
    simulation_config(
        cars=cars, profile=profile, failing_share=failing_share, failure_rate=failure_rate
    )
    settings = load_settings()
    options = DemoOptions(
        cars=cars,
        interval=interval,
        time_lapse=time_lapse,
        steps=steps,
        profile=profile,
        failing_share=failing_share,
        failure_rate=failure_rate,
        train_after=train_after,
        epochs=epochs,
        eval_cars=eval_cars,
        ui=ui,
        ui_port=ui_port,
        keep_stack=keep_stack,
        stop_timeout=stop_timeout,
    )
    shutdown = Shutdown().install()
    reporter = RichReporter(Console(stderr=True), train_after)
    app = Demo(settings, options, reporter)
    try:
        app.run(shutdown)
    except DemoFailed as exc:
        raise CliError(str(exc)) from None
    finally:
        reporter.close()
    reporter.note("demo stopped")
