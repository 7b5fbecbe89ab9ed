"""`fleet bridge --processes N`: N bridge processes on the one shared subscription.

One Python process uses one core at most (the GIL); the broker splits the shared subscription
`$share/<group>/...` between its members, so N processes use N cores. Each child is an
ordinary `fleet bridge` with its own stable MQTT client id (``<id>-<n>``, hence its own
persistent session) and, if metrics are on, its own port (``<port> + n``). A child that dies is
started again with the same id: the broker kept its unacknowledged messages, so nothing is lost.
SIGTERM/Ctrl-C stops every child cleanly (each flushes, acknowledges and disconnects).
"""

from __future__ import annotations

import subprocess
import sys
import time

from fleet.logs import get_logger
from fleet.service import Shutdown

log = get_logger("ingest.bridge_pool")

#: Runs the `fleet` CLI with the interpreter of this process (the same virtualenv).
_FLEET = [sys.executable, "-c", "from fleet.cli import main; main()"]


def child_command(client_id: str, n: int, metrics_port: int) -> list[str]:
    return [
        *_FLEET,
        "bridge",
        "--processes=1",
        f"--client-id={client_id}-{n}",
        f"--metrics-port={metrics_port + n if metrics_port else 0}",
    ]


def run_pool(
    processes: int, client_id: str, metrics_port: int, shutdown: Shutdown, restart_delay: float = 2
) -> int:
    """Run the children until ``shutdown``; returns the worst exit code of their last stop."""
    children = [
        subprocess.Popen(child_command(client_id, n, metrics_port)) for n in range(processes)
    ]
    log.info("bridge processes started", processes=processes, pids=[c.pid for c in children])
    try:
        while not shutdown.wait(0.5):
            for n, child in enumerate(children):
                code = child.poll()
                if code is not None:
                    log.warning("bridge process exited; starting it again", n=n, code=code)
                    if shutdown.wait(restart_delay):
                        break
                    children[n] = subprocess.Popen(child_command(client_id, n, metrics_port))
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 60
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return max((child.returncode or 0) for child in children)
