"""`fleet ml`: train anomaly models, list and promote registry versions, score the live stream."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fleet.cli.context import CliError, load_settings, simulation_config
from fleet.cli.fleet_options import FailingShareOpt, ProfileOpt

ml_app = typer.Typer(help="Anomaly models: train from Kafka, registry in GCS, live scoring.")
console = Console(stderr=True)


@ml_app.command()
def train(
    *,
    source: Annotated[
        str,
        typer.Option(help="kafka (the telemetry topic, via tensorflow-io), lake or simulator"),
    ] = "kafka",
    from_time: Annotated[
        int | None, typer.Option(help="slice start, event time in ms (inclusive)")
    ] = None,
    to_time: Annotated[
        int | None, typer.Option(help="slice end, event time in ms (exclusive)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="model name (default: ml.model_name)")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 15,
    supervised_epochs: Annotated[int, typer.Option(min=0, help="0 = no supervised model")] = 8,
    threshold_method: Annotated[str, typer.Option(help="percentile or f1")] = "percentile",
    percentile: Annotated[float, typer.Option(min=50, max=100)] = 99.0,
    sim_cars: Annotated[int, typer.Option(help="--source simulator: cars")] = 1000,
    sim_steps: Annotated[int, typer.Option(help="--source simulator: readings per car")] = 60,
    sim_seed: Annotated[int, typer.Option()] = 1,
    eval_cars: Annotated[int, typer.Option(help="held-out fleet (0 = no evaluation)")] = 500,
    eval_steps: Annotated[int, typer.Option()] = 60,
    eval_seed: Annotated[int, typer.Option(help="held-out seed (differs from training)")] = 1001,
    eval_first_car: Annotated[int, typer.Option(help="held-out car ids start here")] = 1_000_001,
    profile: ProfileOpt = "fleet",  # the source fleet and the held-out one
    failing_share: FailingShareOpt = None,
    failure_rate: Annotated[
        float | None, typer.Option(help="seed: failure-rate multiplier [default: 0.3]")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="also keep the artifacts in this folder")
    ] = None,
    promote: Annotated[bool, typer.Option(help="promote the new version at once")] = False,
) -> None:
    """Train the autoencoder (and the supervised classifier when labels exist), evaluate on a
    held-out simulated fleet, and upload the version to the registry."""
    from ml import registry, simdata
    from ml import train as training

    if profile == "seed" and failure_rate is None:
        failure_rate = 0.3  # the seed's chances are per step: a third of them still fails most
    fleet_options = {
        "profile": profile,
        "failing_share": failing_share,
        "failure_rate": failure_rate,
    }
    simulation_config(**fleet_options)  # a bad option is refused before anything starts
    sim_options = {k: v for k, v in fleet_options.items() if v is not None}
    settings = load_settings()
    if threshold_method not in ("percentile", "f1"):
        raise typer.BadParameter("--threshold-method must be percentile or f1")
    name = name or settings.ml.model_name
    if source == "kafka":
        from ml.kafka_source import ShortReadError, read_slice

        try:
            columns, info = read_slice(settings, from_time, to_time, settings.ml.stream_timeout_ms)
        except ShortReadError as exc:
            raise CliError(str(exc)) from exc
        data_range: dict[str, Any] = {"source": "kafka", **info.to_dict()}
    elif source == "lake":
        from ml.lake_source import EmptyLakeError, read_lake

        try:
            columns, data_range = read_lake(settings, from_time, to_time)
        except EmptyLakeError as exc:
            raise CliError(str(exc)) from exc
    elif source == "simulator":
        columns = simdata.simulated_columns(sim_cars, sim_steps, sim_seed, 1, **sim_options)
        data_range = {
            "source": "simulator",
            "cars": sim_cars,
            "steps": sim_steps,
            "seed": sim_seed,
            **sim_options,
        }
    else:
        raise typer.BadParameter("--source must be kafka, lake or simulator")
    console.print(f"training {name} on {len(columns['seq'])} readings ({source})")
    eval_columns = (
        simdata.simulated_columns(eval_cars, eval_steps, eval_seed, eval_first_car, **sim_options)
        if eval_cars
        else None
    )
    config = training.TrainConfig(
        name=name,
        epochs=epochs,
        supervised=supervised_epochs > 0,
        supervised_epochs=max(1, supervised_epochs),
        threshold_method=threshold_method,  # type: ignore[arg-type]
        percentile=percentile,
    )
    if eval_columns is not None:
        data_range["evaluation"] = {
            "source": "simulator",
            "cars": eval_cars,
            "steps": eval_steps,
            "seed": eval_seed,
            "first_car": eval_first_car,
            **sim_options,
        }
    version = registry.new_version()
    with tempfile.TemporaryDirectory(prefix="fleet-train-") as tmp:
        out = output or Path(tmp)
        card = training.train(columns, config, out, eval_columns, data_range)
        card["version"] = version
        (out / "model.json").write_text(json.dumps(card, indent=1, default=float))
        uri = registry.upload(settings, out, name, version)
    if "evaluation" in card:
        console.print(evaluation_table(card["evaluation"]))
    console.print(f"threshold {card['threshold']:.4g}; uploaded {uri}")
    if promote:
        registry.promote(settings, name, version, settings.ml.calibrate_on_promotion)
        console.print(f"promoted {name} {version}")
    typer.echo(version)


def evaluation_table(evaluation: dict[str, Any]) -> Table:
    from fleet.contract import FAILURE_MODES

    models = [m for m in ("autoencoder", "classifier", "combined") if m in evaluation]
    table = Table(title=f"held-out evaluation ({evaluation['readings']} readings)")
    table.add_column("metric")
    for m in models:
        table.add_column(m, justify="right")

    def row(label: str, get: Any) -> None:
        table.add_row(label, *(get(evaluation[m]) for m in models))

    row("ROC-AUC", lambda e: f"{e['roc_auc']:.4f}")
    for key in ("precision", "recall", "f1"):
        row(f"{key} at threshold", lambda e, k=key: f"{e['at_threshold'][k]:.3f}")
    row("false alarms at threshold", lambda e: f"{e['at_threshold']['false_alarm_rate']:.3%}")
    for mode in FAILURE_MODES:
        row(
            f"recall {mode} @1% FA",
            lambda e, m=mode: f"{e['recall_per_mode_at_false_alarm_target'][m]['recall']:.3f}",
        )
    row(
        "median detection delay",
        lambda e: f"{e['detection_delay_at_threshold']['median']:.1f}",
    )
    return table


@ml_app.command("models")
def models_(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the registry's model versions."""
    from ml import registry

    rows = registry.list_models(load_settings())
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table()
    for col in ("name", "version", "threshold", "readings", "roc_auc", "code_version"):
        table.add_column(col)
    for r in rows:
        auc = "" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}"
        table.add_row(
            r["name"],
            r["version"],
            f"{r['threshold']:.4g}",
            str(r["readings"]),
            auc,
            r["code_version"],
        )
    Console().print(table)


@ml_app.command("promote")
def promote_(
    name: str,
    version: str,
    calibrate: Annotated[
        bool | None,
        typer.Option(
            help="calibrate the threshold to ml.false_alarms_per_1000_car_hours on the live "
            "fleet's recent telemetry first [default: ml.calibrate_on_promotion]"
        ),
    ] = None,
) -> None:
    """Announce NAME VERSION on the compacted models topic: running scorers switch to it."""
    from ml import registry

    settings = load_settings()
    if calibrate is None:
        calibrate = settings.ml.calibrate_on_promotion
    try:
        record = registry.promote(settings, name, version, calibrate)
    except registry.RegistryError as exc:
        raise CliError(str(exc)) from exc
    typer.echo(f"promoted {name} {version} ({record['artifact_uri']})")


@ml_app.command()
def score(
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port (default ml.metrics_port)")
    ] = None,
) -> None:
    """Score the telemetry stream with the promoted model; stops cleanly on SIGTERM."""
    from fleet.service import Shutdown, quiet_gc, serve_metrics
    from ml.scorer import Scorer

    settings = load_settings()
    shutdown = Shutdown().install()
    serve_metrics(metrics_port if metrics_port is not None else settings.ml.metrics_port)
    scorer = Scorer(settings)
    quiet_gc()
    scorer.run(shutdown)
