"""Every page of the explorer rendered with AppTest against twins in the real MongoDB-wire
server, asserting on the numbers it shows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fleet import clients
from fleet.contract import SENSORS, UNITS
from fleet.settings import Settings
from fleet.stack.ports import free_port
from tests.ui.conftest import SILENT, Render, fleet_events, render_with
from twin.health import CONDITION_NAMES
from ui import anchors

pytestmark = pytest.mark.integration

Fleet = tuple[Settings, list[dict[str, Any]]]


def arrow_frame(data: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all().to_pandas()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def texts(at: AppTest) -> str:
    parts = [*at.info, *at.warning, *at.error, *at.caption, *at.markdown, *at.success]
    return "\n".join(str(p.value) for p in parts)


def cars_with(twins: list[dict[str, Any]], condition: str) -> set[str]:
    return {
        t["_id"] for t in twins if any(c["name"] == condition for c in t["health"]["conditions"])
    }


def alarm_series(at: AppTest) -> Any:
    """The data of the page's cars-in-alarm chart."""
    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            frame = arrow_frame(dataset.data.data)
            if "cars in alarm" in frame.columns:
                return frame.sort_values("time").reset_index(drop=True)
    raise AssertionError("no cars-in-alarm chart")


def test_overview_counts(fleet: Fleet, render: Render) -> None:
    _settings, twins = fleet
    at = render("overview")
    shown = metrics(at)
    anomalous = sum(1 for t in twins if t["anomaly"] and t["anomaly"]["is_anomaly"])
    attention = sum(1 for t in twins if t["health"]["status"] == "attention")
    assert 0 < anomalous < len(twins)
    assert shown["Cars"] == "60"
    assert shown["Reporting (5 min)"] == str(60 - len(SILENT))
    assert shown["Anomalous now"] == str(anomalous)
    assert shown["Need attention"] == str(attention)
    readings = sum(t["counters"]["readings_applied"] for t in twins)
    assert shown["Events in Kafka"] == f"{readings:,}", texts(at)
    assert shown["Scores in Kafka"] == str(len(fleet_events()[1]))
    assert shown["Twin projector lag"] == "0"  # the projector committed everything

    # Cars in alarm over time, replayed from the history's scores: at the fleet clock every
    # car the twins call anomalous (each raised on its newest reading), none an hour before.
    series = alarm_series(at)
    assert series["cars in alarm"].iloc[-1] == anomalous
    assert series["cars in alarm"].iloc[0] == 0
    assert series["raised"].sum() == anomalous

    conditions = next(d.value for d in at.dataframe if "condition" in d.value.columns)
    shown_counts = dict(zip(conditions["condition"], conditions["cars"], strict=True))
    assert len(shown_counts) == len(CONDITION_NAMES)
    for name in CONDITION_NAMES:
        label = name.replace("_", " ").capitalize()
        assert shown_counts[label] == len(cars_with(twins, name)), name


def test_table_filters_sort_and_pages(fleet: Fleet, render: Render) -> None:
    _settings, twins = fleet
    at = render("table")
    assert "Cars 1–50 of 60" in texts(at)
    assert len(at.dataframe[0].value) == 50
    assert list(at.dataframe[0].value["car"][:3]) == ["car1", "car10", "car11"]  # by id
    first_page = list(at.dataframe[0].value["car"])

    at.button(key="table.next").click().run()  # keyset: continues past the last row shown
    assert "Cars 51–60 of 60" in texts(at)
    assert list(at.dataframe[0].value["car"]) == sorted(t["_id"] for t in twins)[50:]
    assert at.button(key="table.next").disabled
    at.button(key="table.prev").click().run()
    assert list(at.dataframe[0].value["car"]) == first_page

    at.text_input(key="table.search").set_value("car1").run()  # car1, car10..car19
    assert "of 11" in texts(at)
    assert set(at.dataframe[0].value["car"]) == {"car1", *(f"car1{i}" for i in range(10))}
    at.text_input(key="table.search").set_value("").run()

    at.selectbox(key="table.condition").set_value("tire_pressure_low").run()
    low = cars_with(twins, "tire_pressure_low")
    assert low
    assert set(at.dataframe[0].value["car"]) == low
    at.selectbox(key="table.condition").set_value("any condition").run()
    attention = {t["_id"] for t in twins if t["health"]["conditions"]}
    assert f"of {len(attention)}" in texts(at)
    assert set(at.dataframe[0].value["car"]) == attention
    at.selectbox(key="table.condition").set_value("any").run()

    at.selectbox(key="table.anomaly").set_value("not anomalous").run()
    calm = {t["_id"] for t in twins if not (t["anomaly"] and t["anomaly"]["is_anomaly"])}
    assert f"of {len(calm)}" in texts(at)  # counted as all cars minus the anomalous ones
    assert 0 < len(calm) < len(twins)
    # The first page of them, by id (a car's verdict needs several scores above threshold,
    # so most of the fleet is calm: more than a page).
    assert list(at.dataframe[0].value["car"]) == sorted(calm)[:50]

    at.selectbox(key="table.anomaly").set_value("any").run()
    at.text_input(key="table.firmware").set_value("1000").run()
    outdated = {t["_id"] for t in twins if t["reported"]["control_unit_firmware"]["value"] == 1000}
    assert outdated
    assert set(at.dataframe[0].value["car"]) == outdated
    at.text_input(key="table.firmware").set_value("").run()

    at.selectbox(key="table.last_seen").set_value("silent for 10 min+").run()
    assert set(at.dataframe[0].value["car"]) == set(SILENT)
    at.selectbox(key="table.last_seen").set_value("within 10 min").run()
    assert f"of {len(twins) - len(SILENT)}" in texts(at)  # all minus the silent ones
    at.selectbox(key="table.last_seen").set_value("silent for 1 h+").run()
    assert "No car matches these filters." in texts(at)


def test_table_keyset_pages_by_score(fleet: Fleet, render: Render) -> None:
    _settings, twins = fleet
    at = render("table")
    # By score, highest first, across two keyset pages: every car once, in order, unscored last.
    at.selectbox(key="table.sort").set_value("anomaly score (highest first)").run()
    shown = list(at.dataframe[0].value.itertuples(index=False))
    at.button(key="table.next").click().run()
    shown += list(at.dataframe[0].value.itertuples(index=False))
    expected = sorted(
        twins,
        key=lambda t: (t["anomaly"] is None, -(t["anomaly"] or {"score": 0})["score"], t["_id"]),
    )
    assert [row.car for row in shown] == [t["_id"] for t in expected]
    scored = [t for t in expected if t["anomaly"]]
    assert [row.score for row in shown[: len(scored)]] == pytest.approx(
        [t["anomaly"]["score"] for t in scored]
    )
    at.button(key="table.first").click().run()
    assert at.dataframe[0].value["car"].iloc[0] == expected[0]["_id"]


def test_table_pages_by_id_across_uneven_prefixes(fleet: Fleet, render: Render) -> None:
    """All cars by id are bounded id windows (car1, car10..car19, car2, ...: the page boundary
    falls inside car5's siblings and the next page widens to car6.., car60, car7..): each car
    once, in order, both ways; a first page read again after the caches expire starts from
    the remembered anchor and shows the same cars."""
    _settings, twins = fleet
    ids = sorted(t["_id"] for t in twins)
    anchors.ANCHORS.clear()  # other tests' pages left theirs (any id is a valid anchor)
    st.cache_data.clear()
    at = render("table")
    shown = list(at.dataframe[0].value["car"])
    assert shown == ids[:50]
    assert anchors.ANCHORS[(cached_key(fleet[0]), "", "car id", False)] == (ids[49], ids[49])
    at.button(key="table.next").click().run()
    assert list(at.dataframe[0].value["car"]) == ids[50:]

    st.cache_data.clear()  # the same first page, now read up to the anchor
    at.button(key="table.first").click().run()
    assert list(at.dataframe[0].value["car"]) == ids[:50]

    at.toggle(key="table.reverse").set_value(True).run()
    backwards = list(at.dataframe[0].value["car"])
    at.button(key="table.next").click().run()
    backwards += list(at.dataframe[0].value["car"])
    assert backwards == ids[::-1]

    # "not anomalous" rides along behind the id windows, across both pages
    at.toggle(key="table.reverse").set_value(False).run()
    at.selectbox(key="table.anomaly").set_value("not anomalous").run()
    calm = [
        t["_id"]
        for t in sorted(twins, key=lambda t: t["_id"])
        if not (t["anomaly"] and t["anomaly"]["is_anomaly"])
    ]
    shown = list(at.dataframe[0].value["car"])
    if len(calm) > 50:
        at.button(key="table.next").click().run()
        shown += list(at.dataframe[0].value["car"])
    assert shown == calm

    at.selectbox(key="table.anomaly").set_value("any").run()
    at.text_input(key="table.search").set_value("car5").run()
    assert list(at.dataframe[0].value["car"]) == [c for c in ids if c.startswith("car5")]


def cached_key(settings: Settings) -> tuple[str, str, str]:
    return (settings.mongodb_uri, settings.mongodb.database, settings.twin.collection)


def test_car_detail(fleet: Fleet, render: Render) -> None:
    settings, twins = fleet
    twin = next(t for t in twins if t["anomaly"] and t["anomaly"]["is_anomaly"])
    at = render("car", {"car": twin["_id"]})
    shown = metrics(at)
    assert shown["Health"] == twin["health"]["status"]
    assert shown["Verdict"] == "anomalous"
    assert shown["Anomaly score"] == f"{twin['anomaly']['score']:.3f}"
    assert shown["Threshold"] == f"{twin['anomaly']['threshold']:.3f}"
    assert shown["Readings"] == str(twin["counters"]["readings_applied"])
    reported = at.dataframe[0].value
    assert list(reported["sensor"]) == list(SENSORS)
    assert dict(zip(reported["sensor"], reported["unit"], strict=True)) == UNITS
    speed = twin["reported"]["speed"]["value"]
    assert reported.set_index("sensor").loc["speed", "value"] == pytest.approx(speed)
    conditions = at.dataframe[1].value
    assert len(conditions) == len(twin["health"]["conditions"])
    # Charts and scores come from the history collection (`fleet run history`), last hour.
    history = clients.mongo_database(settings)[settings.twin.history_collection]
    events = list(history.find({"car": twin["_id"]}).sort("t", 1))
    scores = [e for e in events if e["kind"] == "score"]
    readings = [e for e in events if e["kind"] == "reading"]
    assert len(scores) == 3
    assert len(readings) == twin["counters"]["readings_applied"] > 3
    assert (
        f"{len(readings)} readings and 3 scores in the last hour before the car's last reading, "
        "from the history collection." in texts(at)
    )
    # The score history as shown (newest first), each with its threshold and verdict.
    shown_scores = next(d.value for d in at.dataframe if "threshold" in d.value.columns)
    assert list(shown_scores["seq"]) == [h["seq"] for h in reversed(scores)]
    assert list(shown_scores["score"]) == pytest.approx([h["score"] for h in reversed(scores)])
    assert list(shown_scores["threshold"]) == [h["threshold"] for h in reversed(scores)]
    assert list(shown_scores["anomalous"]) == [h["is_anomaly"] for h in reversed(scores)]
    # The chart layers the score and the threshold on the sensors' time axis.
    charts = [(json.loads(c.proto.spec), c.proto.datasets) for c in at.get("vega_lite_chart")]
    (sensors, _), (score_chart, datasets) = [
        c for c in charts if "facet" in c[0] or "layer" in c[0]
    ]
    scales = [layer["encoding"]["x"]["scale"] for layer in score_chart["layer"]]
    assert scales == [sensors["spec"]["encoding"]["x"]["scale"]] * 4  # one time axis
    frames = {d.name: arrow_frame(d.data.data) for d in datasets}
    plotted = {tuple(sorted(f.columns)): f for f in frames.values()}
    # The alarm period behind the line: 3 flagged scores of 3 raise it on the third, and it
    # still holds.
    periods = plotted[("end", "open", "start")]
    assert len(periods) == 1 and bool(periods["open"].iloc[0])
    assert periods["start"].iloc[0] == scores[-1]["t"].replace(
        tzinfo=periods["start"].iloc[0].tzinfo
    )
    assert "Alarms in this range: 1 (the last still holds)" in texts(at)
    # The alarm's reasons read as values beside their healthy band.
    assert "(normal" in texts(at) or "standing still" in texts(at), texts(at)
    line = next(f for cols, f in plotted.items() if "score" in cols)
    assert list(line["score"]) == pytest.approx([h["score"] for h in scores])
    threshold = next(
        f for cols, f in plotted.items() if "threshold" in cols and "score" not in cols
    )
    assert set(threshold["threshold"]) == {h["threshold"] for h in scores}
    assert at.json[0].value  # the raw twin document
    assert twin["_id"] in at.json[0].value


def test_unknown_car_is_a_message(fleet: Fleet, render: Render) -> None:
    at = render("car", {"car": "car999999"})
    assert "No car with id `car999999` in the fleet." in texts(at)
    assert "`car9`" in texts(at)  # a hint at cars that exist (the id shortened)
    assert not at.metric


def test_anomaly_leaderboard(fleet: Fleet, render: Render) -> None:
    _settings, twins = fleet
    at = render("anomalies")
    anomalous = sorted(
        (t for t in twins if t["anomaly"] and t["anomaly"]["is_anomaly"]),
        key=lambda t: (-t["anomaly"]["score"], t["_id"]),
    )
    board = at.dataframe[0].value
    assert len(board) == min(25, len(anomalous))
    assert list(board["car"]) == [t["_id"] for t in anomalous[:25]]
    # Reasons in words: the raising sensors at their reported values beside a healthy band.
    by_car = {t["_id"]: t for t in anomalous}
    for car, text in zip(board["car"], board["reasons"], strict=True):
        speed = by_car[car]["reported"]["speed"]["value"]
        tire = by_car[car]["reported"]["tire_pressure_1_1"]["value"]
        # The fixture's scores name coolant_temp or speed, then tire_pressure_1_1.
        assert f"tire 1_1 at {tire:.0f} psi (normal 30-34)" in text, text
        assert ("coolant" in text and "(normal up to 110)" in text) or f"speed {speed:.3g}" in text
    assert alarm_series(at)["cars in alarm"].iloc[-1] == len(anomalous)
    drivers = at.dataframe[1].value
    top = Counter(next(iter(t["anomaly"]["top_sensors"])) for t in anomalous[:25])
    assert dict(zip(drivers["sensor"], drivers["cars"], strict=True)) == top


def test_empty_database(fresh_settings: Settings) -> None:
    render = render_with(fresh_settings)
    assert "No twins yet" in texts(render("overview"))
    assert "No twins yet." in texts(render("table"))
    assert "No car is anomalous now." in texts(render("anomalies"))
    assert "No car with id `car1`" in texts(render("car", {"car": "car1"}))


def test_mongo_down(settings: Settings) -> None:
    away = settings.model_copy(
        update={
            "mongodb": settings.mongodb.model_copy(
                update={"uri": f"mongodb://127.0.0.1:{free_port()}/"}
            )
        }
    )
    render = render_with(away)
    for page, query in [
        ("overview", None),
        ("table", None),
        ("car", {"car": "car1"}),
        ("anomalies", None),
    ]:
        at = render(page, query)
        assert at.error, page
        assert "MongoDB is not reachable" in at.error[0].value, page


def test_lake(fleet: Fleet, render: Render) -> None:
    readings, scores = fleet_events()
    at = render("lake")
    shown = metrics(at)
    assert shown["Events archived"] == f"{len(readings):,}"
    assert shown["Events in range"] == f"{len(readings):,}"
    assert shown["Cars in range"] == "60"
    incidence = next(d.value for d in at.dataframe if "mode" in d.value.columns)
    events = dict(zip(incidence["mode"], incidence["events"], strict=True))
    assert events["any"] == sum(1 for r in readings if r["failure_occurred"])
    for mode in ("firmware", "tire_pressure_1_1", "drive_shaft"):
        assert events[mode] == sum(1 for r in readings if mode in r["failure_modes"]), mode

    at.text_input(key="lake.cars.telemetry").set_value("car5, car6")
    at.button[0].click().run()
    assert not at.exception
    wanted = sum(1 for r in readings if r["car_id"] in {"car5", "car6"})
    assert f"{wanted} events from" in texts(at)
    result = at.dataframe[-1].value
    assert set(result["car_id"]) == {"car5", "car6"}
    assert len(result) == wanted

    at.radio(key="lake.dataset").set_value("anomalies").run()
    assert metrics(at)["Events archived"] == str(len(scores))


def test_lake_empty_and_away(fresh_settings: Settings) -> None:
    bucket = f"empty-{fresh_settings.mongodb.database}".replace("_", "-")
    clients.gcs_client(fresh_settings).create_bucket(bucket)
    empty = fresh_settings.model_copy(
        update={"gcs": fresh_settings.gcs.model_copy(update={"bucket": bucket})}
    )
    assert "The lake has no telemetry yet" in texts(render_with(empty)("lake"))
    away = fresh_settings.model_copy(
        update={
            "gcs": fresh_settings.gcs.model_copy(
                update={"endpoint": f"http://127.0.0.1:{free_port()}"}
            )
        }
    )
    at = render_with(away)("lake")
    assert "is not readable at" in at.error[0].value


def model_card(version: str, auc: float) -> dict[str, Any]:
    """A `model.json` of the registry's documented shape (what `fleet ml train` uploads)."""
    return {
        "threshold": 0.5,
        "features": ["coolant_temp", "speed"],
        "code_version": "test",
        "training": {"readings": 1000},
        "evaluation": {
            "autoencoder": {
                "roc_auc": auc,
                "threshold": 0.5,
                "false_alarm_target": 0.01,
                "at_threshold": {"precision": 0.9, "recall": 0.8, "f1": 0.85},
                "roc": [[0.0, 0.1, 1.0], [0.0, 0.7, 1.0]],
                "recall_per_mode_at_false_alarm_target": {"coolant": 0.95, "firmware": 0.4},
            }
        },
    }


def test_models(fresh_settings: Settings, tmp_path: Path) -> None:
    from ml import registry

    bucket = f"models-{fresh_settings.mongodb.database}".replace("_", "-")
    clients.gcs_client(fresh_settings).create_bucket(bucket)
    settings = fresh_settings.model_copy(
        update={"gcs": fresh_settings.gcs.model_copy(update={"bucket": bucket})}
    )
    render = render_with(settings)
    assert "The model registry is empty" in texts(render("models"))

    name = settings.ml.model_name
    for version, auc in (("v1", 0.91), ("v2", 0.97)):
        folder = tmp_path / version
        folder.mkdir()
        (folder / "model.json").write_text(json.dumps(model_card(version, auc)))
        registry.upload(settings, folder, name, version)
    registry.promote(settings, name, "v1")

    st.cache_data.clear()  # as a user would after the registry's 30 s cache time
    at = render("models")
    shown = metrics(at)
    assert shown["Versions"] == "2"
    assert shown["Live version"] == "v1"
    assert shown["Live threshold"] == "0.5"
    versions = at.dataframe[0].value
    assert list(versions["version"]) == ["v1", "v2"]
    assert list(versions["live"]) == [True, False]
    assert list(versions["roc_auc"]) == [0.91, 0.97]
    evaluation = at.dataframe[1].value
    assert evaluation["ROC-AUC"].iloc[0] == 0.91  # the live version is shown first
    per_mode = at.dataframe[2].value
    assert dict(zip(per_mode["mode"], per_mode["autoencoder"], strict=True)) == {
        "coolant": 0.95,
        "firmware": 0.4,
    }
