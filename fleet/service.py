"""What every long-running service shares: clean shutdown on SIGTERM/Ctrl-C, and metrics."""

from __future__ import annotations

import gc
import signal
import threading
from types import FrameType

from prometheus_client import start_http_server

from fleet.logs import get_logger

log = get_logger("fleet.service")


class Shutdown:
    """Set by SIGTERM or SIGINT; service loops check it between batches and then finish cleanly.

    A second signal while shutting down raises KeyboardInterrupt, for a stuck service.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> Shutdown:
        """Install the signal handlers (main thread only); returns self for chaining."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._event.is_set():
            raise KeyboardInterrupt
        log.info("shutdown requested", signal=signal.Signals(signum).name)
        self._event.set()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on shutdown; True if shutting down."""
        return self._event.wait(timeout)


#: Allocations between collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def quiet_gc() -> None:
    """Fewer, cheaper garbage collections for a stream service that allocates per event.

    Reference counting frees almost everything such a service allocates; the collector only
    looks for cycles, yet with Python's defaults it runs every 700 allocations and now and
    then walks every object alive, modules and clients included. So: what is alive after
    start-up leaves the collector's sight (gc.freeze), and the youngest generation waits for
    50,000 allocations. Measured on the projector's apply path (20,000 twins, one process,
    the two settings alternately): 8-18% less CPU per twin.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def serve_metrics(port: int | None) -> None:
    """Expose Prometheus metrics on ``port`` (0 or None: don't)."""
    if port:
        start_http_server(port)
        log.info("metrics", url=f"http://0.0.0.0:{port}/metrics")
