"""Child processes that outlive the command that started them, tracked by pid files.

A pid file records the pid and the process's start time, so `down` stops exactly the process
`up` started and never a stranger that later got the same pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float
    command: list[str]

    def process(self) -> psutil.Process | None:
        """The live process this record describes, or None if it is gone."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.5:
                return None  # the pid was reused by another process
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None


def read_pidfile(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), float(data["create_time"]), list(data["command"]))
    except (FileNotFoundError, ValueError, KeyError):
        return None


def spawn(
    command: list[str], log_file: Path, pidfile: Path, cwd: Path, env: dict[str, str] | None = None
) -> PidRecord:
    """Start ``command`` in its own session (it survives our exit) and record it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=None if env is None else os.environ | env,
            start_new_session=True,
        )
    record = PidRecord(proc.pid, psutil.Process(proc.pid).create_time(), command)
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.__dict__))
    tmp.replace(pidfile)
    return record


def terminate(record: PidRecord, timeout: float = 30.0) -> bool:
    """SIGTERM the process and its children, SIGKILL what is left after ``timeout``.

    Returns True if a live process was stopped.
    """
    proc = record.process()
    if proc is None:
        return False
    family = [proc, *proc.children(recursive=True)]
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=5)
    return True
