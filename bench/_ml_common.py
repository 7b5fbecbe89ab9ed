"""Shared by the ML benchmarks: a stack of their own (or the running one), results files."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleet import clients
from fleet.settings import Settings
from fleet.stack import Stack
from fleet.stack.ports import private_stack_environment
from fleet.topics import create_topics, topic_specs

RESULTS = Path(__file__).parent / "results"
CAVEAT = (
    "2 shared cores, other helpers' stacks and test suites running at the same time: "
    "indicative figures only"
)


@contextlib.contextmanager
def stack(services: tuple[str, ...] = ("kafka", "gcs")) -> Iterator[Settings]:
    """Settings of a running stack (``FLEET_KAFKA_PORT`` etc. set: use it), else start one on
    free ports in a temporary folder and stop it afterwards. Topics get a unique suffix."""
    started = None
    if "FLEET_KAFKA_PORT" not in os.environ and "FLEET_KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        home = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
        os.environ.update(private_stack_environment(home))
        started = Stack(Settings(), only=services)
        started.up()
    try:
        base = Settings()
        suffix = uuid.uuid4().hex[:8]
        topics = base.topics.model_copy(
            update={
                n: f"{getattr(base.topics, n)}.bench{suffix}"
                for n in ("telemetry", "anomalies", "dead_letters", "models")
            }
        )
        groups = base.groups.model_copy(update={"scorer": f"bench-scorer-{suffix}"})
        ml = base.ml.model_copy(update={"registry_prefix": f"bench-models-{suffix}"})
        settings = base.model_copy(update={"topics": topics, "groups": groups, "ml": ml})
        create_topics(clients.kafka_admin(settings), topic_specs(settings))
        yield settings
    finally:
        if started is not None:
            started.down()


def write_results(section: str, figures: dict[str, Any]) -> Path:
    """Merge ``figures`` under ``section`` into bench/results/ml.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "ml.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["caveat"] = CAVEAT
    data[section] = figures
    path.write_text(json.dumps(data, indent=1, default=float) + "\n")
    return path


def promote_small_model(settings: Settings) -> str:
    """Train a small autoencoder on simulated readings, register and promote it (what the
    latency benchmarks score with). Returns its version."""
    from ml import registry, simdata
    from ml import train as training

    with tempfile.TemporaryDirectory() as tmp:
        config = training.TrainConfig(epochs=3, supervised=False, progress=False)
        training.train(
            simdata.simulated_columns(300, 30, seed=3, profile="seed", failure_rate=0.5),
            config,
            Path(tmp),
        )
        version = registry.new_version()
        registry.upload(settings, Path(tmp), settings.ml.model_name, version)
        registry.promote(settings, settings.ml.model_name, version)
    return version
