"""`fleet stack up | down | status | logs`: the local servers as child processes, no Docker."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fleet import clients
from fleet.logs import get_logger
from fleet.settings import Settings
from fleet.stack.process import read_pidfile, spawn, terminate
from fleet.stack.services import Service, all_services
from fleet.topics import create_topics, topic_specs
from fleet.waiting import DeadlineExceeded, wait_for

log = get_logger("fleet.stack")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | stopped | external | unhealthy
    pid: int | None
    address: str
    healthy: bool
    server: str | None = None  # what runs (e.g. secantusd-rs); None when stopped or external


class ServiceFailed(RuntimeError):
    pass


class Stack:
    """The local stack described by ``settings``; services pointed elsewhere are left alone."""

    def __init__(self, settings: Settings, only: Iterable[str] | None = None) -> None:
        self.settings = settings
        wanted = set(only) if only else None
        self.services: list[Service] = [
            s for s in all_services(settings) if wanted is None or s.name in wanted
        ]

    @property
    def home(self) -> Path:
        return self.settings.stack.home.resolve()

    def managed(self) -> list[Service]:
        return [s for s in self.services if not s.external]

    def check_prerequisites(self) -> None:
        for service in self.managed():
            service.check_prerequisites()

    def install(self, on_progress: Callable[[str, str], None] = lambda name, state: None) -> None:
        """Everything `up` needs before it can start, without starting anything."""
        self.check_prerequisites()
        for service in self.managed():
            service.install(functools.partial(on_progress, service.name))

    def up(self, on_progress: Callable[[str, str], None] = lambda name, state: None) -> None:
        """Start every managed service that is not running; wait until all are healthy.

        Idempotent: a healthy running service is left as it is.
        """
        self.check_prerequisites()
        self.home.mkdir(parents=True, exist_ok=True)
        started: list[tuple[Service, float]] = []
        for service in self.managed():
            record = read_pidfile(service.pidfile)
            if record is not None and record.process() is not None:
                on_progress(service.name, "already running")
                continue
            if service.healthy():
                raise ServiceFailed(
                    f"{service.name}: something else already answers at {service.address()}; "
                    "stop it or choose another port"
                )
            notice = service.notice()
            if notice:
                on_progress(service.name, notice)
            on_progress(service.name, "preparing")
            service.prepare()
            spawn(service.command(), service.log_file, service.pidfile, cwd=service.home)
            started.append((service, time.monotonic()))
            on_progress(service.name, "starting")
        for service in self.managed():
            self._wait_healthy(service)
            service.after_start()
            on_progress(service.name, "healthy")
        if any(s.name == "kafka" for s in self.managed()) or self.settings.is_external("kafka"):
            created = create_topics(clients.kafka_admin(self.settings), topic_specs(self.settings))
            if created:
                on_progress("topics", f"created {', '.join(created)}")

    def _wait_healthy(self, service: Service) -> None:
        record = read_pidfile(service.pidfile)

        def ready() -> bool:
            if record is not None and record.process() is None:
                raise ServiceFailed(
                    f"{service.name} exited during start-up; see {service.log_file}:\n"
                    + tail(service.log_file, 15)
                )
            return service.healthy()

        try:
            wait_for(
                ready,
                self.settings.stack.start_timeout,
                f"{service.name} to be healthy",
                interval=0.2,
                fatal=(ServiceFailed,),
            )
        except DeadlineExceeded:
            raise ServiceFailed(
                f"{service.name} did not become healthy within "
                f"{self.settings.stack.start_timeout:.0f}s; see {service.log_file}"
            ) from None

    def down(self, on_progress: Callable[[str, str], None] = lambda name, state: None) -> None:
        """Stop exactly the processes `up` started (by pid file), in reverse order."""
        for service in reversed(self.managed()):
            record = read_pidfile(service.pidfile)
            if record is not None and terminate(record):
                on_progress(service.name, "stopped")
            else:
                on_progress(service.name, "was not running")
            service.pidfile.unlink(missing_ok=True)

    def status(self) -> list[ServiceStatus]:
        result = []
        for service in self.services:
            healthy = service.healthy()
            if service.external:
                result.append(
                    ServiceStatus(service.name, "external", None, service.address(), healthy)
                )
                continue
            record = read_pidfile(service.pidfile)
            proc = record.process() if record else None
            state = "stopped" if proc is None else ("running" if healthy else "unhealthy")
            result.append(
                ServiceStatus(
                    service.name,
                    state,
                    proc.pid if proc else None,
                    service.address(),
                    healthy,
                    # From the pid file: what runs, whatever the settings say now.
                    service.server(record.command) if proc and record else None,
                )
            )
        return result

    def log_file(self, name: str) -> Path:
        for service in self.services:
            if service.name == name:
                return service.log_file
        raise KeyError(name)


def tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
