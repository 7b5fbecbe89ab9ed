"""Which MongoDB-wire server the local stack runs, its build, and what it promises."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from fleet import clients
from fleet.settings import Settings
from fleet.stack import PrerequisiteMissing, rust_server
from fleet.stack.ports import free_port
from fleet.stack.services import MongoWire
from fleet.waiting import wait_for


def local(tmp_path: Path, server: str, cache: Path | None = None) -> MongoWire:
    """The stack's MongoDB service in a folder of its own, on a free port."""
    settings = Settings()
    return MongoWire(
        settings.model_copy(
            update={
                "mongodb": settings.mongodb.model_copy(
                    update={"server": server, "port": free_port()}
                ),
                "stack": settings.stack.model_copy(
                    update={"home": tmp_path / "home", "cache": cache or settings.stack.cache}
                ),
            }
        )
    )


def test_python_when_chosen(tmp_path: Path) -> None:
    mongodb = local(tmp_path, "python")
    command = mongodb.command()
    assert Path(command[0]).name == "secantusd-py"
    assert command[command.index("--storage-path") + 1] == str(mongodb.home / "data")
    assert "--sync-on-commit" not in command
    assert mongodb.notice() is None


def test_auto_falls_back_to_python_with_a_notice_when_rust_is_not_built(tmp_path: Path) -> None:
    mongodb = local(tmp_path, "auto", cache=tmp_path / "empty-cache")
    mongodb.check_prerequisites()
    assert Path(mongodb.command()[0]).name == "secantusd-py"
    assert "secantusd-rs is not built" in (mongodb.notice() or "")


def test_rust_when_chosen_but_not_built_says_how_to_build_it(tmp_path: Path) -> None:
    mongodb = local(tmp_path, "rust", cache=tmp_path / "empty-cache")
    with pytest.raises(PrerequisiteMissing, match="fleet stack install"):
        mongodb.check_prerequisites()


def test_a_cached_build_is_not_built_again(tmp_path: Path) -> None:
    program = rust_server.install_root(tmp_path) / "bin" / rust_server.PROGRAM
    program.parent.mkdir(parents=True)
    program.write_text("")
    program.chmod(0o755)
    notices: list[str] = []
    assert rust_server.build(tmp_path, notices.append) == program
    assert notices == []  # no toolchain looked for, no cargo run


def test_no_toolchain_is_a_one_line_notice_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("CARGO_HOME", str(tmp_path / "cargo"))
    notices: list[str] = []
    assert rust_server.build(tmp_path / "cache", notices.append) is None
    assert len(notices) == 1
    assert "not built" in notices[0]
    assert "\n" not in notices[0]


@pytest.mark.integration
@pytest.mark.fault
def test_an_acknowledged_write_survives_a_kill_9_of_the_server(tmp_path: Path) -> None:
    """README: writes are journaled, so an acknowledged write survives a crash of the server
    (secantusd-rs needs its own flag for that: MongoWire.command)."""
    mongodb = local(tmp_path, "auto")
    mongodb.prepare()

    def start() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            mongodb.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(mongodb.healthy, 60, "the server to answer")
        return server

    server = start()
    try:
        with clients.mongo_client(mongodb.settings) as client:
            documents = client["durability"]["acknowledged"]
            for i in range(300):  # one write (one commit) at a time, as the projector's
                documents.insert_one({"_id": i, "payload": "x" * 1000})
        os.kill(server.pid, signal.SIGKILL)
        server.wait(30)
        server = start()
        with clients.mongo_client(mongodb.settings) as client:
            assert client["durability"]["acknowledged"].count_documents({}) == 300
    finally:
        server.kill()
        server.wait(30)
