"""Run a service loop in a thread of the test process; stop it cleanly and surface its errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fleet.service import Shutdown


@contextmanager
def running_in_thread(name: str, run: Callable[[], object], shutdown: Shutdown) -> Iterator[None]:
    """``run()`` in a thread until the block ends, then ``shutdown`` it and re-raise its error."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        shutdown.request()
        thread.join(60)
        assert not thread.is_alive(), f"{name} did not stop"
    if errors:
        raise errors[0]
