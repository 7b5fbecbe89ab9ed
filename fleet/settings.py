"""One settings object for every service.

Sources, strongest first: explicit arguments, environment variables (``FLEET_<SECTION>_<FIELD>``,
e.g. ``FLEET_KAFKA_BOOTSTRAP_SERVERS``, ``FLEET_MONGODB_URI``), a TOML file (``--config``,
``FLEET_CONFIG`` or ``./fleet.toml``), then the defaults below, which describe the local stack.

A connection setting left unset means "the local stack": ``fleet stack up`` starts that server
and clients connect to it on its configured port. Setting it (for example ``FLEET_MONGODB_URI``
to a MongoDB 7 cluster) points every service there and the stack starts nothing for it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

LOCALHOST = "127.0.0.1"
GOOGLE_STORAGE_ENDPOINT = "https://storage.googleapis.com"


class KafkaSettings(BaseModel):
    bootstrap_servers: str | None = Field(
        None, description="host:port list; unset = the local stack's broker"
    )
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    extra: dict[str, str] = Field(
        default_factory=dict, description="more librdkafka settings, passed through as given"
    )
    # Local stack only.
    port: int = 9092
    controller_port: int = 9093
    heap: str = "-Xms256m -Xmx1g"


class MongoSettings(BaseModel):
    uri: str | None = Field(None, description="unset = the local stack's MongoDB-wire server")
    database: str = "fleet"
    port: int = 27017  # local stack only
    server: Literal["auto", "rust", "python"] = Field(
        "auto",
        description="the local stack's server: SecantusDB's Rust `secantusd-rs` (built by "
        "`fleet stack install`), its Python `secantusd-py`, or auto (Rust when built)",
    )
    transaction_lifetime_seconds: int = Field(
        15,
        ge=1,
        description="the local stack's server ends a transaction left open this long (its "
        "client was killed): until then, the twins it wrote stay locked",
    )


class MqttSettings(BaseModel):
    host: str | None = Field(None, description="unset = the local stack's Mosquitto")
    port: int = 1883
    # The bridge's account: it may subscribe to readings and publish commands.
    username: str = "bridge"
    password: SecretStr = SecretStr("bridge-secret")
    # A gateway account that may publish for any car (the simulator uses it).
    gateway_username: str = "fleet-gateway"
    gateway_password: SecretStr = SecretStr("gateway-secret")
    tls: bool = False
    max_packet_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="the local stack's Mosquitto refuses larger packets (and drops the client)",
    )


class GcsSettings(BaseModel):
    endpoint: str | None = Field(
        None,
        description=f"unset = the local emulator; {GOOGLE_STORAGE_ENDPOINT} = real GCS",
    )
    bucket: str = "fleet-lake"
    project: str = "fleet-local"
    port: int = 4443  # local stack only


class TopicSettings(BaseModel):
    telemetry: str = "fleet.telemetry.v1"
    anomalies: str = "fleet.anomalies.v1"
    dead_letters: str = "fleet.deadletter.v1"
    models: str = "fleet.models"
    commands: str = "fleet.commands.v1"
    twin_changes: str = "fleet.twin-changes.v1"
    telemetry_partitions: int = 6
    anomalies_partitions: int = 6
    dead_letters_partitions: int = 1
    commands_partitions: int = 6
    twin_changes_partitions: int = 6
    twin_changes_retention_hours: int = 7 * 24
    replication_factor: int = 1


class GroupSettings(BaseModel):
    twin: str = "fleet-twin"
    lake: str = "fleet-lake"
    scorer: str = "fleet-scorer"
    bridge: str = "fleet-bridge"
    commands: str = "fleet-commands"
    history: str = "fleet-history"


class StackSettings(BaseModel):
    home: Path = Field(Path(".fleet"), description="data, logs and pid files of the local stack")
    cache: Path = Field(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fleet",
        description="Kafka's jars and the built secantusd-rs (kept across stacks)",
    )
    start_timeout: float = 90.0


class IngestSettings(BaseModel):
    """The fleet simulator, the MQTT-to-Kafka bridge and importers."""

    metrics_port: int = 0  # 0 = no metrics endpoint
    # The bridge. Readings are taken through an MQTT shared subscription
    # `$share/<groups.bridge>/<bridge_topic_filter>`, so several bridges split the load. The
    # filter covers the whole readings tree so a malformed topic is dead-lettered, not ignored.
    bridge_topic_filter: str = "vehicles/sensor/data/#"
    bridge_client_id: str | None = Field(
        None, description="MQTT client id (persistent session); unset = fleet-bridge-<hostname>"
    )
    bridge_max_in_flight: int = Field(
        5000, ge=1, le=65535, description="messages taken but not yet confirmed by Kafka"
    )
    bridge_batch_size: int = Field(2000, ge=1)
    bridge_linger_ms: float = Field(
        20, ge=0, description="how long Kafka requests gather readings (fewer, fuller requests)"
    )
    bridge_processes: int = Field(1, ge=1, description="bridge processes `fleet bridge` runs")
    bridge_session_expiry: int = Field(
        7 * 24 * 3600, ge=1, description="seconds the broker keeps a stopped bridge's queue"
    )
    max_payload_bytes: int = Field(
        16_384, ge=256, description="longest reading payload; longer ones are dead-lettered"
    )
    dead_letter_payload_bytes: int = Field(
        65_536,
        ge=0,
        le=512 * 1024,
        description="most bytes of a rejected payload a dead letter carries (its length and "
        "SHA-256 always): every dead letter fits the topic's max.message.bytes of 1 MiB",
    )


class TwinSettings(BaseModel):
    """The twin projector and its queries."""

    collection: str = "twins"
    metrics_port: int = 0
    dedupe_window: int = Field(
        32,
        ge=1,
        description="readings whose identity a twin remembers, to tell a repeated reading "
        "from a late one (16 bytes each)",
    )
    history_collection: str = Field(
        "readings", description="time-series collection of every reading and score (history)"
    )
    history_retention_days: float = Field(
        7, ge=0, description="days the history collection keeps (set at its creation); 0: all"
    )
    batch_size: int = Field(
        500_000,
        ge=1,
        description="most events per batch (memory: ~350 bytes each while undecoded)",
    )
    poll_timeout: float = Field(
        1.0, gt=0, description="seconds to wait for the first event of a batch"
    )
    max_staleness_seconds: float = Field(
        1.0,
        gt=0,
        description="caught up, a batch takes no more cars than can be written in this long, so "
        "the newest readings reach their twins within about this (freshness first)",
    )
    score_wait_seconds: float = Field(
        0.5,
        ge=0,
        description="caught up and with scores flowing, a car's newest reading waits up to this "
        "long for its anomaly score, so both reach the twin in one write (half the twin writes "
        "per reading); 0: write readings at once",
    )
    batch_seconds: float = Field(
        180.0,
        gt=0,
        description="aim for batches that take at most this long to apply: the cars per batch "
        "adapts (the projector's max.poll.interval.ms is 900 s)",
    )
    write_chunk: int = Field(
        500,
        ge=1,
        description="most cars decoded, folded and written together (bounds memory)",
    )
    chunks_in_flight: int = Field(
        2,
        ge=1,
        description="chunks of cars applied at once: one is folded here while the server "
        "writes another (1: one after the other)",
    )
    cache_mb: int = Field(
        256,
        ge=0,
        description="MB of the twins written last kept in memory (encoded), so batches need "
        "not read them back; every write is guarded, so a stale copy is only a re-read. 0: off",
    )
    transactions: bool = Field(
        True,
        description="where the server has them (a replica set or mongos; secantusd-rs), write "
        "each chunk in one multi-document transaction: one journal flush instead of one per "
        "twin, a third to half less server CPU per twin (bench/results/twin_write.md). After a "
        "kill -9 mid-write, the orphaned transaction holds its twins until the server ends it "
        "(mongodb.transaction_lifetime_seconds on the local stack; MongoDB: 60 s)",
    )
    max_backoff: float = Field(30.0, gt=0, description="longest wait between retries (s)")
    # Desired state and commands (twin/desired.py, twin/changes.py, twin/command_service.py).
    emit_changes: bool = Field(True, description="publish a twin-change event per twin written")
    rollout_timeout: float = Field(
        600.0, gt=0, description="seconds after which an unconverged car counts as failed"
    )


class LakeSettings(BaseModel):
    """The lake archiver and batch reads."""

    metrics_port: int = 0
    datasets: list[str] = Field(
        default_factory=lambda: ["telemetry", "anomalies"],
        description="topics to archive: telemetry, anomalies",
    )
    max_records: int = Field(100_000, description="rotate a segment after this many records")
    max_bytes: int = Field(32 * 1024 * 1024, description="...or this many Avro bytes (buffer cap)")
    window_seconds: int = Field(3600, description="...or when event time enters a newer window")
    grace_seconds: int = Field(0, description="event-time windows start this late")
    flush_seconds: float = Field(
        60.0, description="flush a segment this old once caught up with the end of the log"
    )
    batch_size: int = 10_000
    upload_threads: int = 8
    retry_max_seconds: float = Field(30.0, description="longest back-off between upload retries")
    read_threads: int = 8


class MlSettings(BaseModel):
    """Training, the model registry and live scoring."""

    metrics_port: int = 0
    registry_prefix: str = Field("models", description="models/<name>/<version>/ in the bucket")
    model_name: str = Field("fleet-autoencoder", description="the model the scorer follows")
    batch_size: int = Field(5000, description="readings the scorer polls and scores at once")
    # Seconds the scorer waits for a batch to fill: short, because the projector holds a
    # reading back until its score comes (twin.score_wait_seconds).
    poll_timeout: float = 0.1
    top_sensors: int = 3  # contributing sensors named in each anomaly event
    stream_timeout_ms: int = Field(
        10_000, description="training read from Kafka ends after this long without messages"
    )
    false_alarms_per_1000_car_hours: float = Field(
        0.5, description="the false-alarm budget a promoted model's threshold is calibrated to"
    )
    calibrate_on_promotion: bool = Field(
        True,
        description="fleet ml promote / train --promote: calibrate the threshold on the live "
        "fleet's recent readings in Kafka first (ml/calibration.py)",
    )
    calibration_hours: float = Field(
        2.0, description="event-time hours of the newest telemetry the calibration reads"
    )


class UiSettings(BaseModel):
    """The Streamlit fleet explorer."""

    port: int = 8501


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "console", "json"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEET_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        validate_default=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    mongodb: MongoSettings = MongoSettings()
    mqtt: MqttSettings = MqttSettings()
    gcs: GcsSettings = GcsSettings()
    topics: TopicSettings = TopicSettings()
    groups: GroupSettings = GroupSettings()
    stack: StackSettings = StackSettings()
    log: LogSettings = LogSettings()
    ingest: IngestSettings = IngestSettings()
    twin: TwinSettings = TwinSettings()
    lake: LakeSettings = LakeSettings()
    ml: MlSettings = MlSettings()
    ui: UiSettings = UiSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = config_file_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # --- where things are: the configured service, or the local stack's ---

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap_servers or f"{LOCALHOST}:{self.kafka.port}"

    @property
    def mongodb_uri(self) -> str:
        return self.mongodb.uri or f"mongodb://{LOCALHOST}:{self.mongodb.port}/"

    @property
    def mqtt_host(self) -> str:
        return self.mqtt.host or LOCALHOST

    @property
    def gcs_endpoint(self) -> str:
        return self.gcs.endpoint or f"http://{LOCALHOST}:{self.gcs.port}"

    @property
    def uses_real_gcs(self) -> bool:
        return self.gcs_endpoint.rstrip("/") == GOOGLE_STORAGE_ENDPOINT

    def is_external(self, service: str) -> bool:
        """True when the user pointed this service elsewhere, so the local stack leaves it be."""
        return {
            "kafka": self.kafka.bootstrap_servers is not None,
            "mongodb": self.mongodb.uri is not None,
            "mosquitto": self.mqtt.host is not None,
            "gcs": self.gcs.endpoint is not None,
        }[service]


def config_file_path() -> Path | None:
    """The TOML file to read: $FLEET_CONFIG if set (it must exist), else ./fleet.toml if present."""
    named = os.environ.get("FLEET_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise FileNotFoundError(f"FLEET_CONFIG names {path}, which is not a file")
        return path
    default = Path("fleet.toml")
    return default if default.is_file() else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings as plain data with secrets masked, for logs and `fleet config`."""
    return settings.model_dump(mode="json")
