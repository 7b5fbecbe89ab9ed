"""SecantusDB's Rust server, `secantusd-rs`: built once with cargo into the stack's cache.

No package registry here ships it as a binary, only as the crate `secantus-mdb` on crates.io.
Building it takes ~5 minutes on 2 cores, so `fleet stack install` (`make setup`) does it once
per cache and `fleet stack up` only looks for the result (and falls back to the Python server
when there is none). The crate declares a newer Rust than this machine's stable toolchain, so
the build uses rustup's nightly toolchain when there is one, with `--ignore-rust-version`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

CRATE = "secantus-mdb"
VERSION = "0.5.3-beta.196"
PROGRAM = "secantusd-rs"

Notify = Callable[[str], None]


class BuildUnavailable(RuntimeError):
    """No toolchain here can build the server; the message is the one-line notice."""


def install_root(cache: Path) -> Path:
    """`cargo install --root` of the pinned version: the program lands in its `bin/`."""
    return cache.resolve() / f"{CRATE}-{VERSION}"


def built_program(cache: Path) -> Path | None:
    """The cached server, or None when it was never built (or not for this version)."""
    program = install_root(cache) / "bin" / PROGRAM
    return program if program.is_file() and os.access(program, os.X_OK) else None


def _rust_tool(name: str) -> str | None:
    # rustup puts its proxies in ~/.cargo/bin, which a non-login shell (CI, make) may not
    # have on PATH.
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = shutil.which(name)
    if found:
        return found
    candidate = cargo_home / "bin" / name
    return str(candidate) if candidate.is_file() else None


def cargo_command() -> list[str]:
    """How to call cargo for the build: through rustup's nightly toolchain when installed."""
    cargo, rustc = _rust_tool("cargo"), _rust_tool("rustc")
    if cargo is None or rustc is None:
        raise BuildUnavailable(
            f"{PROGRAM} not built: no cargo/rustc (install rustup and its nightly toolchain, "
            "then `fleet stack install` again); the local stack will run secantusd-py"
        )
    rustup = _rust_tool("rustup")
    if rustup is not None:
        listed = subprocess.run(
            [rustup, "toolchain", "list"], capture_output=True, text=True, check=False
        ).stdout.split()
        if any(name.startswith("nightly") for name in listed):
            return [cargo, "+nightly"]
    return [cargo]  # the default toolchain may be too old: then the build says so


def build(cache: Path, notify: Notify) -> Path | None:
    """The cached server, built first if need be; None (after a notice) if it cannot be."""
    found = built_program(cache)
    if found is not None:
        return found
    try:
        cargo = cargo_command()
    except BuildUnavailable as exc:
        notify(str(exc))
        return None
    root = install_root(cache)
    root.parent.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed into place: a half-built or interrupted install is never found.
    staging = root.with_name(f"{root.name}.{uuid.uuid4().hex}.partial")
    log_file = root.with_name(f"{root.name}.build.log")
    notify(f"building {PROGRAM} ({CRATE} {VERSION}) with cargo, once: 5-8 min on 2 cores")
    try:
        if not _cargo_install(cargo, staging, log_file):
            notify(
                f"{PROGRAM} not built: cargo failed (see {log_file}); "
                "the local stack will run secantusd-py"
            )
            return None
        with contextlib.suppress(OSError):  # another install finished first: keep its result
            staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return built_program(cache)


def _cargo_install(cargo: list[str], root: Path, log_file: Path) -> bool:
    """`cargo install` of the pinned version into ``root``: the crate's own lock file first
    (the dependency versions it was released with), resolving afresh only if that fails."""
    command = [
        *cargo,
        "install",
        CRATE,
        "--version",
        VERSION,
        "--ignore-rust-version",
        "--root",
        str(root),
    ]
    with log_file.open("w+") as log:
        for extra in (["--locked"], []):
            log.write(f"$ {' '.join([*command, *extra])}\n")
            log.flush()
            start = log.tell()
            result = subprocess.run(
                [*command, *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if result.returncode == 0:
                return True
            log.seek(start)
            if "--locked" not in log.read():
                return False  # a failure the lock file did not cause: trying again is no use
            log.seek(0, os.SEEK_END)
    return False
