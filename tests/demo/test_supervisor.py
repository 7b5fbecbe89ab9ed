"""The demo's child processes: restarted when they die, stopped with nothing left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil

from fleet.demo.supervisor import Supervisor
from fleet.waiting import wait_for

PY = sys.executable
SLEEPER = "import time\nwhile True: time.sleep(0.05)"
# Ignores SIGTERM and starts a grandchild in its own session (outside the process group).
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    f"subprocess.Popen([sys.executable, '-c', {SLEEPER!r}], start_new_session=True)\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.05)\n"
)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_dead_service_is_restarted_then_given_up(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, {}, max_restarts=2)
    child = supervisor.start("flaky", [PY, "-c", "print('hello'); raise SystemExit(3)"])
    seen = []
    while True:
        events = wait_for(supervisor.check, 30, "the child to exit")
        seen += [(e.action, e.exit_code) for e in events]
        if seen[-1][0] == "gave up":
            break
    assert seen == [("restarted", 3), ("restarted", 3), ("gave up", 3)]
    assert child.restarts == 2
    assert child.log_file.read_text().count("hello") == 3


def test_a_job_ends_without_restart(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, {})
    supervisor.start("job", [PY, "-c", "pass"], service=False)
    events = wait_for(supervisor.check, 30, "the job to end")
    assert [(e.action, e.exit_code) for e in events] == [("done", 0)]
    assert supervisor.check() == []


def test_a_background_job_runs_at_the_lowest_priority_and_services_do_not(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(tmp_path, {})
    show = [PY, "-c", "import os; print('niceness', os.nice(0))"]
    supervisor.start("trainer", show, service=False, background=True)
    supervisor.start("job", show, service=False)
    wait_for(lambda: len(supervisor.check()) or None, 30, "a job to end")
    wait_for(
        lambda: (
            all(c.exit_code is not None for c in supervisor.children.values()) or supervisor.check()
        ),
        30,
        "both jobs to end",
    )
    assert "niceness 19" in supervisor.children["trainer"].log_file.read_text()
    assert f"niceness {psutil.Process().nice()}" in supervisor.children["job"].log_file.read_text()


def test_stop_terms_then_kills_and_leaves_no_descendant(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, {})
    polite = supervisor.start("polite", [PY, "-c", SLEEPER])
    stubborn = supervisor.start("stubborn", [PY, "-c", STUBBORN])
    wait_for(lambda: "ready" in stubborn.log_file.read_text(), 30, "the stubborn child")
    assert stubborn.pid is not None
    wait_for(lambda: psutil.Process(stubborn.pid).children(), 10, "the grandchild")
    supervisor.check()  # notes the grandchild
    family = set(polite.pids_seen | stubborn.pids_seen)
    assert len(family) == 3
    killed = supervisor.stop_all(timeout=2)
    assert killed == ["stubborn"]
    assert polite.exit_code == -signal.SIGTERM
    assert stubborn.exit_code == -signal.SIGKILL
    assert not [pid for pid in family if _alive(pid)]


def test_children_die_with_a_killed_demo(tmp_path: Path) -> None:
    parent = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from fleet.demo.supervisor import Supervisor\n"
        f"supervisor = Supervisor(Path({str(tmp_path)!r}), {{}})\n"
        f"child = supervisor.start('s', [sys.executable, '-c', {SLEEPER!r}])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    demo = subprocess.Popen([PY, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert demo.stdout is not None
        pid = int(demo.stdout.readline())
        assert _alive(pid)
    finally:
        demo.kill()  # SIGKILL: no chance to stop its children itself
        demo.wait()
    wait_for(lambda: not _alive(pid), 10, "the orphan to be killed by the kernel")
