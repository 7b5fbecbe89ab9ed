"""`fleet demo`: the whole platform from one command, supervised, stopped cleanly.

Order of events:
1. the local stack (servers whose connection setting is given are external and left alone),
   topics included;
2. the services as `fleet run ...` children: bridge, twin projector, history, lake archiver, scorer
   (it waits for a promoted model), command service, and the explorer;
3. once the bridge is subscribed, the simulated fleet over MQTT (through the gateway account,
   which may publish for any car: no per-car accounts needed);
4. once the telemetry topic holds ``train_after`` readings, `fleet ml train --promote` from
   Kafka. tensorflow-io reads until the topic has been quiet for a few seconds, so the bridge
   is stopped (SIGTERM: it flushes and disconnects) while the trainer reads its slice, and
   started again as soon as the trainer has it. The cars drive on meanwhile: Mosquitto keeps
   their readings in the bridge's persistent session (the bridge's no-loss guarantee) and the
   restarted bridge delivers them, late but with their own event times. The scorer picks the
   promoted model up by itself.
5. on SIGTERM/Ctrl-C: the simulator and trainer first, then the services (SIGTERM, a
   deadline, then SIGKILL), then the stack servers this demo started.

A service that dies is reported and restarted (``max_restarts`` times); after that the demo
stops everything and fails with the service's last log lines. A failed training is reported
and retried once ``train_after`` more readings have arrived (at most three attempts).
"""

from __future__ import annotations

import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fleet.demo.observe import Observer, Snapshot
from fleet.demo.supervisor import Child, ChildExit, Supervisor, fleet_command, tail
from fleet.service import Shutdown
from fleet.settings import LOCALHOST, Settings
from fleet.stack import Stack
from fleet.stack.process import read_pidfile

SERVICES = ("bridge", "twin", "history", "lake", "scorer", "commands")
RUN_FOREVER_STEPS = 100_000_000  # the simulator's "until stopped"
MAX_TRAININGS = 3
MAX_BRIDGE_DOWN_S = 300.0  # Mosquitto queues meanwhile (max_queued_messages)


class DemoFailed(RuntimeError):
    """The demo cannot go on (a service keeps dying, the stack does not start)."""


@dataclass(frozen=True)
class DemoOptions:
    cars: int = 1000
    interval: float = 10.0  # simulated seconds between a car's readings
    time_lapse: float = 10.0  # simulated seconds per wall second
    steps: int | None = None  # readings per car; None = until stopped
    profile: str = "fleet"  # the simulated fleet (ingest.simulator)
    failing_share: float | None = None  # None: the profile's default
    failure_rate: float | None = None
    seed: int = 42
    train_after: int = 20_000  # readings in Kafka before the first training
    epochs: int = 5
    eval_cars: int = 200
    ui: bool = True
    ui_port: int | None = None
    keep_stack: bool = False
    stop_timeout: float = 60.0
    max_restarts: int = 3


class Reporter:
    """How the demo talks to its user; the CLI draws it with rich."""

    def note(self, message: str) -> None:
        """A milestone, one line."""

    def status(self, snapshot: Snapshot, children: list[Child], phase: str) -> None:
        """The current state (called about once a second)."""


class Demo:
    def __init__(self, settings: Settings, options: DemoOptions, reporter: Reporter) -> None:
        self.settings = settings
        self.options = options
        self.reporter = reporter
        self.stack = Stack(settings)
        self.log_dir = self.stack.home / "demo"
        env = dict(os.environ)
        env["FLEET_LOG_FORMAT"] = "json"  # children's structured logs go to files
        if options.ui_port is not None:
            env["FLEET_UI_PORT"] = str(options.ui_port)
        self.supervisor = Supervisor(self.log_dir, env, options.max_restarts)
        self.observer = Observer(settings)
        self.started_stack: list[str] = []
        self.phase = "starting"
        self.trainings = 0
        self.next_training_at = options.train_after
        self.bridge_down_at: float | None = None
        self.ui_ready = False
        self.model_ready = False

    @property
    def ui_url(self) -> str:
        port = self.options.ui_port or self.settings.ui.port
        return f"http://{LOCALHOST}:{port}"

    # --- the run ---

    def run(self, shutdown: Shutdown) -> None:
        """Run until ``shutdown`` is requested; always leaves nothing running behind."""
        try:
            self._start_stack()
            if not shutdown.requested:
                self._start_services(shutdown)
            while not shutdown.requested:
                self._tick()
                shutdown.wait(1.0)
        finally:
            self.phase = "stopping"
            self._stop()

    def _start_stack(self) -> None:
        self.phase = "stack"
        running_before = {
            s.name
            for s in self.stack.managed()
            if (record := read_pidfile(s.pidfile)) is not None and record.process() is not None
        }
        self.reporter.note(f"starting the local stack (data and logs in {self.stack.home})")
        self.started_stack = [s.name for s in self.stack.managed() if s.name not in running_before]
        try:
            self.stack.up(lambda name, state: self.reporter.note(f"  {name:<10} {state}"))
        except Exception as exc:
            raise DemoFailed(f"the stack did not start: {exc}") from exc
        external = [s.name for s in self.stack.services if s.external]
        if external:
            self.reporter.note(f"external (left alone): {', '.join(external)}")

    def _start_services(self, shutdown: Shutdown) -> None:
        self.phase = "services"
        self.reporter.note(f"starting services; their logs are in {self.log_dir}")
        for name in SERVICES:
            child = self.supervisor.start(name, fleet_command("run", name))
            self.reporter.note(f"  {name:<10} pid {child.pid}")
        if self.options.ui:
            child = self.supervisor.start("ui", fleet_command("run", "ui"))
            self.reporter.note(f"  {'ui':<10} pid {child.pid}")
        # Messages published before the bridge's first subscription are not kept (MQTT).
        self._wait_for_log("bridge", '"mqtt connected"', 90, shutdown)
        if shutdown.requested:
            return
        self.observer.start()
        self.phase = "simulating"
        steps = self.options.steps or RUN_FOREVER_STEPS
        o = self.options
        self.supervisor.start(
            "simulator",
            fleet_command(
                "simulate",
                "--output",
                "mqtt",
                "--cars",
                str(o.cars),
                "--interval",
                str(o.interval),
                "--steps",
                str(steps),
                "--time-lapse",
                str(o.time_lapse),
                *self._fleet_options(),
                "--seed",
                str(o.seed),
                "--obey-commands",  # so `fleet twin set ...` rolls out to the demo's cars
            ),
            service=False,
        )
        self.reporter.note(
            f"simulating {o.cars:,} cars over MQTT, a reading every {o.interval:g} s, "
            f"{o.time_lapse:g}x time-lapse ({o.cars / o.interval * o.time_lapse:,.0f} readings/s)"
        )

    def _fleet_options(self) -> list[str]:
        """The simulated fleet's profile and options, as `fleet simulate` takes them."""
        o = self.options
        given = {"--failing-share": o.failing_share, "--failure-rate": o.failure_rate}
        extra = [part for flag, v in given.items() if v is not None for part in (flag, str(v))]
        return ["--profile", o.profile, *extra]

    def _wait_for_log(self, name: str, text: str, timeout: float, shutdown: Shutdown) -> None:
        child = self.supervisor.children[name]
        deadline = time.monotonic() + timeout
        while not shutdown.requested:
            if text in _read(child.log_file):
                return
            self._handle(self.supervisor.check())
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"{name} was not ready after {timeout:.0f}s; see {child.log_file}:\n"
                    + tail(child.log_file)
                )
            shutdown.wait(0.2)

    def _tick(self) -> None:
        self._handle(self.supervisor.check())
        snapshot = self.observer.latest
        self._maybe_train(snapshot)
        self._maybe_restart_bridge()
        if self.options.ui and not self.ui_ready and _http_ok(self.ui_url):
            self.ui_ready = True
            self.reporter.note(f"the fleet explorer is at {self.ui_url}")
        self.reporter.status(snapshot, list(self.supervisor.children.values()), self.phase)

    def _handle(self, exits: list[ChildExit]) -> None:
        for event in exits:
            child = event.child
            if event.action == "restarted":
                self.reporter.note(
                    f"{child.name} exited with code {event.exit_code}; restarted "
                    f"({child.restarts}/{self.options.max_restarts}), see {child.log_file}"
                )
            elif event.action == "gave up":
                raise DemoFailed(
                    f"{child.name} keeps exiting (code {event.exit_code}, restarted "
                    f"{child.restarts} times); see {child.log_file}:\n{tail(child.log_file)}"
                )
            elif child.name == "simulator":
                self.reporter.note(
                    "the simulator finished"
                    if event.action == "done"
                    else f"the simulator failed (code {event.exit_code}); see {child.log_file}"
                )
            elif child.name == "trainer":
                self._training_ended(event)

    def _maybe_train(self, snapshot: Snapshot) -> None:
        trainer = self.supervisor.children.get("trainer")
        if self.model_ready or (trainer is not None and trainer.running):
            return
        if snapshot.model_version is not None and self.trainings == 0:
            self.model_ready = True  # promoted before this demo (a second run on one stack)
            self.reporter.note(f"model {snapshot.model_version} is already promoted")
            return
        if self.trainings >= MAX_TRAININGS or (snapshot.readings or 0) < self.next_training_at:
            return
        self.trainings += 1
        self.phase = "training"
        o = self.options
        # tensorflow-io reads until the topic is quiet: hold the readings in Mosquitto.
        self.supervisor.stop(["bridge"], self.options.stop_timeout)
        self.bridge_down_at = time.monotonic()
        self.supervisor.start(
            "trainer",
            fleet_command(
                "ml",
                "train",
                "--source",
                "kafka",
                "--promote",
                "--epochs",
                str(o.epochs),
                "--supervised-epochs",
                str(o.epochs),
                "--eval-cars",
                str(o.eval_cars),
                *self._fleet_options(),  # the held-out fleet is one like the demo's
            ),
            service=False,
            env={
                "FLEET_ML_STREAM_TIMEOUT_MS": os.environ.get("FLEET_ML_STREAM_TIMEOUT_MS", "5000")
            },
            background=True,  # the live twins come first; a first model may take longer
        )
        self.reporter.note(
            f"{snapshot.readings:,} readings in Kafka: training a first model from them "
            "(the bridge pauses while the trainer reads them; Mosquitto keeps the cars' readings)"
        )

    def _maybe_restart_bridge(self) -> None:
        if self.bridge_down_at is None:
            return
        trainer = self.supervisor.children["trainer"]
        read = '"read from kafka"' in _read(trainer.log_file)
        if (
            read
            or not trainer.running
            or time.monotonic() - self.bridge_down_at > MAX_BRIDGE_DOWN_S
        ):
            self.supervisor.start("bridge", fleet_command("run", "bridge"))
            self.bridge_down_at = None
            self.reporter.note("the trainer has its slice: bridge started again")

    def _training_ended(self, event: ChildExit) -> None:
        self._maybe_restart_bridge()
        self.phase = "simulating"
        log_file = event.child.log_file
        if event.action == "done":
            self.model_ready = True
            version = _last_line(event.child.log_file)
            self.reporter.note(f"model {version} trained and promoted: the scorer takes it up")
        else:
            self.next_training_at = (self.observer.latest.readings or 0) + self.options.train_after
            retry = (
                f"retrying at {self.next_training_at:,} readings"
                if self.trainings < MAX_TRAININGS
                else "giving up"
            )
            self.reporter.note(
                f"training failed (code {event.exit_code}), {retry}; see {log_file}:\n"
                + tail(log_file, 5)
            )

    def _stop(self) -> None:
        self.reporter.note("stopping: simulator and trainer first, then the services")
        self.observer.close()
        timeout = self.options.stop_timeout
        killed = self.supervisor.stop(["simulator", "trainer"], timeout)
        killed += self.supervisor.stop_all(timeout)
        if killed:
            self.reporter.note(f"killed after {timeout:.0f}s: {', '.join(killed)}")
        else:
            self.reporter.note("every service stopped cleanly")
        if self.started_stack and not self.options.keep_stack:
            Stack(self.settings, self.started_stack).down(
                lambda name, state: self.reporter.note(f"  {name:<10} {state}")
            )
        elif self.started_stack or self.stack.managed():
            self.reporter.note("the stack keeps running (`fleet stack down` stops it)")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _last_line(path: Path) -> str:
    """The trainer prints the new version as its last stdout line."""
    for raw in reversed(_read(path).splitlines()):
        line = raw.strip()
        if line.startswith("v") and " " not in line:
            return line
    return "(version unknown)"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
