"""Child processes of `fleet demo`: start, watch, restart, and stop them without leftovers.

Each child runs in its own process group (a Ctrl-C in the terminal reaches only the demo,
which then stops the children in order) and asks the kernel to kill it if the demo itself
dies (PR_SET_PDEATHSIG), so even a kill -9 of the demo leaves no orphans behind. Its stdout
and stderr (structured JSON logs) go to one file per child.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:  # loaded here, not in the child: no library loading between fork and exec
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # not glibc Linux: children then rely on the orderly stop
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL me when the process that started me exits."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _background_job() -> None:
    """`_die_with_parent`, and at the lowest CPU priority: a job that must not slow the
    services that keep the twins fresh (the trainer: TensorFlow takes every core it gets)."""
    _die_with_parent()
    os.nice(19)


def fleet_command(*args: str) -> list[str]:
    """The `fleet` command line in this interpreter (works without the console script)."""
    return [sys.executable, "-m", "fleet", *args]


@dataclass
class Child:
    name: str
    argv: list[str]
    log_file: Path
    service: bool  # True: runs until stopped, restarted if it dies; False: a job that ends
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    exit_code: int | None = None
    stopped: bool = False  # stopped on purpose (not a failure)
    env: dict[str, str] = field(default_factory=dict)  # on top of the supervisor's
    pids_seen: set[int] = field(default_factory=set)
    background: bool = False  # runs at the lowest CPU priority

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def state(self) -> str:
        if self.running:
            return "running"
        if self.proc is None:
            return "not started"
        if self.stopped:
            return "stopped"
        return "done" if self.exit_code == 0 else f"exited {self.exit_code}"


@dataclass(frozen=True)
class ChildExit:
    """What `Supervisor.check` saw: a child ended, and what was done about it."""

    child: Child
    exit_code: int
    action: str  # "done" (a job ended well), "failed" (a job failed), "restarted", "gave up"


class Supervisor:
    def __init__(
        self,
        log_dir: Path,
        env: dict[str, str],
        max_restarts: int = 3,
        on_start: Callable[[Child], None] = lambda child: None,
    ) -> None:
        self.log_dir = log_dir
        self.env = env
        self.max_restarts = max_restarts
        self.on_start = on_start
        self.children: dict[str, Child] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        argv: list[str],
        service: bool = True,
        env: dict[str, str] | None = None,
        background: bool = False,
    ) -> Child:
        child = self.children.get(name)
        if child is None:
            child = Child(name, argv, self.log_dir / f"{name}.log", service)
            self.children[name] = child
        child.argv = argv
        child.env = env or {}
        child.background = background
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        with child.log_file.open("ab") as log:
            child.proc = subprocess.Popen(
                child.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env | child.env,
                # Its own process group: the terminal's Ctrl-C reaches the demo only, which
                # then stops the children in order.
                process_group=0,
                # C calls only, no imports: safe before exec in a threaded parent.
                preexec_fn=_background_job if child.background else _die_with_parent,  # noqa: PLW1509
            )
        child.started_at = time.monotonic()
        child.exit_code = None
        child.stopped = False
        child.pids_seen.add(child.proc.pid)
        self.on_start(child)

    def check(self) -> list[ChildExit]:
        """Notice children that ended; restart services (up to ``max_restarts`` each)."""
        events = []
        for child in self.children.values():
            if child.proc is None or child.stopped or child.exit_code is not None:
                continue
            self._remember_descendants(child)
            code = child.proc.poll()
            if code is None:
                continue
            child.exit_code = code
            if not child.service:
                events.append(ChildExit(child, code, "done" if code == 0 else "failed"))
            elif child.restarts < self.max_restarts:
                child.restarts += 1
                self._spawn(child)
                events.append(ChildExit(child, code, "restarted"))
            else:
                events.append(ChildExit(child, code, "gave up"))
        return events

    def _remember_descendants(self, child: Child) -> None:
        with contextlib.suppress(psutil.Error):
            if child.pid is not None:
                for p in psutil.Process(child.pid).children(recursive=True):
                    child.pids_seen.add(p.pid)

    @staticmethod
    def _signal_group(child: Child, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if child.pid is not None:
                os.killpg(child.pid, signum)

    def stop(self, names: list[str], timeout: float) -> list[str]:
        """SIGTERM the children (and their process groups), wait up to ``timeout`` s for them
        to exit, then SIGKILL whatever is left. Returns the names that had to be killed."""
        chosen = [self.children[n] for n in names if n in self.children]
        family: dict[str, list[psutil.Process]] = {}
        for child in chosen:
            child.stopped = True
            if not child.running:
                continue
            self._remember_descendants(child)
            members = []
            for pid in child.pids_seen:
                with contextlib.suppress(psutil.Error):
                    members.append(psutil.Process(pid))
            family[child.name] = members
            self._signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = []
        for child in chosen:
            if child.proc is None:
                continue
            try:
                child.exit_code = child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(child.name)
                self._signal_group(child, signal.SIGKILL)
                child.exit_code = child.proc.wait(10)
            # Whatever the child started and left behind (its group or not) goes too.
            members = family.get(child.name, [])
            _, alive = psutil.wait_procs(members, timeout=max(0.0, deadline - time.monotonic()))
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(alive, timeout=5)
        return killed

    def stop_all(self, timeout: float) -> list[str]:
        """Stop every child, the last started first."""
        return self.stop(list(reversed(self.children)), timeout)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
