"""The local stack: Kafka (KRaft), a MongoDB-wire server, Mosquitto and the GCS emulator."""

from fleet.stack.services import PrerequisiteMissing
from fleet.stack.stack import ServiceFailed, ServiceStatus, Stack

__all__ = ["PrerequisiteMissing", "ServiceFailed", "ServiceStatus", "Stack"]
