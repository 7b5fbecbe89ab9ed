"""Settings: environment, TOML file, precedence, and what counts as external (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet.settings import Settings, redacted


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no ./fleet.toml unless a test writes one


def test_defaults_describe_the_local_stack() -> None:
    settings = Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.mongodb_uri == "mongodb://127.0.0.1:27017/"
    assert settings.gcs_endpoint == "http://127.0.0.1:4443"
    assert not settings.uses_real_gcs
    assert not any(settings.is_external(s) for s in ("kafka", "mongodb", "mosquitto", "gcs"))


def test_environment_variables_name_section_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_KAFKA_BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
    monkeypatch.setenv("FLEET_MONGODB_URI", "mongodb://db.example:27017/")
    monkeypatch.setenv("FLEET_TOPICS_TELEMETRY", "cars.v1")
    monkeypatch.setenv("FLEET_KAFKA_EXTRA", '{"client.rack": "r1"}')
    settings = Settings()
    assert settings.kafka_bootstrap == "b1:9092,b2:9092"
    assert settings.mongodb_uri == "mongodb://db.example:27017/"
    assert settings.topics.telemetry == "cars.v1"
    assert settings.kafka.extra == {"client.rack": "r1"}
    assert settings.is_external("kafka") and settings.is_external("mongodb")
    assert not settings.is_external("gcs")


def test_toml_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "custom.toml"
    config.write_text(
        '[gcs]\nendpoint = "https://storage.googleapis.com"\nbucket = "lake-prod"\n'
        '[mongodb]\ndatabase = "from_toml"\n'
    )
    monkeypatch.setenv("FLEET_CONFIG", str(config))
    monkeypatch.setenv("FLEET_MONGODB_DATABASE", "from_env")
    settings = Settings()
    assert settings.gcs.bucket == "lake-prod"
    assert settings.uses_real_gcs and settings.is_external("gcs")
    assert settings.mongodb.database == "from_env"


def test_fleet_toml_in_the_working_directory_is_found(tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_text("[topics]\nanomalies = 'scores'\n")
    assert Settings().topics.anomalies == "scores"


def test_a_missing_named_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_CONFIG", "/no/such/file.toml")
    with pytest.raises(FileNotFoundError, match="not a file"):
        Settings()


def test_a_bad_value_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_KAFKA_PORT", "ninety")
    with pytest.raises(ValidationError):
        Settings()


def test_secrets_are_masked_when_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_MQTT_PASSWORD", "hunter2")
    monkeypatch.setenv("FLEET_KAFKA_SASL_PASSWORD", "s3cret")
    shown = str(redacted(Settings()))
    assert "hunter2" not in shown and "s3cret" not in shown
    assert Settings().mqtt.password.get_secret_value() == "hunter2"
