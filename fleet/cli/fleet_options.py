"""The simulated fleet's options, shared by every command that simulates one (`fleet simulate`,
`fleet demo`, `fleet ml train`): the same names, meanings and defaults everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

ProfileOpt = Annotated[
    str,
    typer.Option(
        help="fleet: failures come, develop and get repaired; "
        "seed: the original demo's per-step rules (its CSV)"
    ),
]
FailingShareOpt = Annotated[
    float | None,
    typer.Option(help="fleet: share of cars with an active failure [default: 0.03]"),
]
