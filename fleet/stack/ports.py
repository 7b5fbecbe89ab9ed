"""A private local stack on free ports, for tests and benchmarks that run beside other stacks."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_stack_environment(home: Path) -> dict[str, str]:
    """FLEET_* variables for a stack of its own: its own folder and free ports for every server."""
    return {
        "FLEET_STACK_HOME": str(home),
        "FLEET_KAFKA_PORT": str(free_port()),
        "FLEET_KAFKA_CONTROLLER_PORT": str(free_port()),
        "FLEET_MONGODB_PORT": str(free_port()),
        "FLEET_MQTT_PORT": str(free_port()),
        "FLEET_GCS_PORT": str(free_port()),
    }
