"""Scores reach the twins: scorer (from a registered, promoted model) -> anomaly topic ->
twin projector -> the `anomaly` part of each car's twin, for the car's latest reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.service import Shutdown
from fleet.settings import Settings
from fleet.waiting import wait_for
from ml import registry, simdata
from ml import train as training
from ml.scorer import Scorer
from tests.ml.test_ml_stack import isolated
from tests.threads import running_in_thread
from twin import queries
from twin.projector import Projector

pytestmark = pytest.mark.integration


def test_scores_of_the_latest_readings_land_on_the_twins(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated(fresh_settings)
    name = settings.ml.model_name
    config = training.TrainConfig(epochs=3, supervised=False, progress=False, seed=0)
    training.train(
        simdata.simulated_columns(300, 20, seed=5, profile="seed", failure_rate=0.5),
        config,
        tmp_path,
    )
    version = registry.new_version()
    registry.upload(settings, tmp_path, name, version)
    registry.promote(settings, name, version)

    readings = simdata.simulated_records(40, 8, seed=9, profile="seed", failure_rate=3.0)
    latest = {r["car_id"]: r for r in readings}  # each car's newest reading (last step)
    # Failing through each car's last five readings (failures stay on in this profile), and
    # healthy throughout.
    failing = {r["car_id"] for r in readings if r["seq"] == 3 and r["failure_occurred"]}
    healthy = set(latest) - {r["car_id"] for r in readings if r["failure_occurred"]}
    assert failing and healthy
    simdata.publish(settings, readings)

    collection = queries.twins(settings)
    fast = {"session.timeout.ms": 6000}

    def scored_on_twins() -> bool:
        twins = list(collection.find({}, {"anomaly": 1, "last_reading": 1}))
        return len(twins) == len(latest) and all(
            t["anomaly"] is not None and t["anomaly"]["seq"] == t["last_reading"]["seq"]
            for t in twins
        )

    scorer_stop, projector_stop = Shutdown(), Shutdown()
    projector = Projector(settings, projector_stop, **fast)
    with (
        running_in_thread("scorer", lambda: Scorer(settings).run(scorer_stop), scorer_stop),
        running_in_thread("projector", projector.run, projector_stop),
    ):
        wait_for(scored_on_twins, 180, "every twin to carry its latest reading's score")

    for car, reading in latest.items():
        twin = queries.get_twin(collection, car)
        assert twin is not None
        anomaly = twin["anomaly"]
        assert anomaly["model_name"] == name and anomaly["model_version"] == version
        # The reading's own flag is bit 0; `is_anomaly` is the car's verdict (ml/verdict.py).
        assert bool(anomaly["recent"] & 1) == (anomaly["score"] >= anomaly["threshold"])
        assert twin["last_reading"]["seq"] == reading["seq"]
    flagged = {
        t["_id"]
        for t in queries.top_anomalous(collection, n=len(latest))
        if t["anomaly"]["is_anomaly"]
    }
    # The model sees most failing cars and raises few false alarms on healthy ones.
    assert len(flagged & failing) >= 0.8 * len(failing)
    assert len(flagged & healthy) <= 0.1 * len(healthy) + 1
