"""Command events as plain dicts, as `fleet twin set` puts them on Kafka."""

from __future__ import annotations

import itertools
from typing import Any

from tests.twin.factories import T0

_ids = itertools.count()


def cmd(  # noqa: PLR0917
    car: str = "car1",
    value: Any = 2000,
    expected_version: int | None = None,
    prop: str = "firmware",
    issued_at: int = T0,
    command_id: str | None = None,
    rollout_id: str | None = None,
) -> dict[str, Any]:
    return {
        "command_id": command_id or f"c{next(_ids)}",
        "car_id": car,
        "property": prop,
        "value": value,
        "expected_version": expected_version,
        "issued_at": issued_at,
        "issuer": "test@host",
        "rollout_id": rollout_id,
    }
