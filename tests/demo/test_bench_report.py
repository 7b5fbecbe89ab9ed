"""The benchmark report: figures read from results files by key, judged against their goals."""

from __future__ import annotations

from pathlib import Path

from bench import report
from bench.report import Spec, figures, fmt, judge


def test_a_missing_file_or_key_is_not_measured_and_never_an_error() -> None:
    found = {f.label: f for f in figures({"ingest": {"kafka_direct": {}}, "ui": {"pages": 3}})}
    assert found["simulator -> Kafka direct, 100,000 cars"].status == "not measured"
    assert found["archive Kafka -> Avro objects, 1M events"].status == "not measured"
    assert found["explorer overview, 100,000 twins (cold median)"].status == "not measured"
    assert {f.status for f in found.values()} == {"not measured"}


def test_goals_and_verdicts() -> None:
    results = {
        "ingest": {
            "kafka_direct": {"events_per_s": 150_000, "goal_events_per_s": 100_000},
            "mqtt_bridge_kafka": {"sustained_msg_per_s": 9_999, "lost_pubacked": 0},
        },
        "ui": {"pages": [{"page": "overview", "cold_median_s": 2.5}]},
    }
    found = {f.label: f for f in figures(results)}
    direct = found["simulator -> Kafka direct, 100,000 cars"]
    assert (direct.value, direct.status) == (150_000, "met")
    assert direct.goal == ">= 100,000 events/s"  # the file's own goal wins over the default
    assert found["simulator -> MQTT -> bridge -> Kafka, QoS 1, sustained"].status == "missed"
    assert found["PUBACKed readings lost (MQTT path)"].status == "met"
    overview = found["explorer overview, 100,000 twins (cold median)"]
    assert (overview.value, overview.status) == (2.5, "missed")  # lower is better


def test_judge_and_format() -> None:
    assert judge(None, 1, "higher") == "not measured"
    assert judge(3, None, "higher") == "-"
    assert judge(2, 2, "lower") == "met"
    assert judge(2.1, 2, "lower") == "missed"
    assert (fmt(0), fmt(1_459_801.4), fmt(0.99777), fmt(5.9)) == ("0", "1,459,801", "0.998", "5.9")


def test_memory_goal_needs_100000_cars() -> None:
    small = {
        "memory_same_events": [
            {"cars": 1000, "peak_rss_mb": 100},
            {"cars": 20000, "peak_rss_mb": 110},
        ]
    }
    big = {
        "memory_same_events": [
            {"cars": 1000, "peak_rss_mb": 100},
            {"cars": 100000, "peak_rss_mb": 110},
        ]
    }
    assert report.memory_growth(small) is None
    assert report.memory_growth(big) == 1.1
    assert "not measured at 100,000 cars" in report.memory_note(small)


def test_report_files(tmp_path: Path) -> None:
    (tmp_path / "lake.json").write_text('{"archive_events_per_s": 120000, "caveat": "a | b"}')
    (tmp_path / "broken.json").write_text("{not json")
    results = report.load_results(tmp_path)
    assert set(results) == {"lake"}
    built = report.build(results)
    built["sources"] = report.source_notes(results, tmp_path)
    path = report.write(built, tmp_path)
    text = path.read_text()
    assert "| lake | archive Kafka -> Avro objects, 1M events | 120,000 events/s |" in text
    assert "**met**" in text
    for key in ("cores", "ram_gb", "cpu", "git_commit", "date", "load_average_after"):
        assert built["machine"][key] is not None
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    # Every table row has as many cells as its header (no stray pipes from file contents).
    assert all(row.count("|") in (7, 5) for row in rows), rows
    assert (tmp_path / "report.json").is_file()


def test_every_spec_names_a_known_results_file() -> None:
    stems = {"ingest", "lake", "twin", "twin-fold", "ml", "ui", "peer"}
    assert {s.source for s in report.SPECS} <= stems
    assert all(isinstance(s, Spec) for s in report.SPECS)
