"""Headless Chromium driven over the DevTools protocol (CDP), for the explorer's browser test.

No driver package: Chromium's own remote-debugging websocket, spoken with `websockets` (already
installed with Streamlit). Flags are those this machine needs (closed network, root).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from fleet.waiting import DeadlineExceeded, wait_for

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page; ``with Browser(...) as b: b.open(url)``."""

    def __init__(self, width: int = 1440, height: int = 1000) -> None:
        executable = chromium_path()
        if executable is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        # Chromium's helper processes may still be writing as the profile is removed.
        self._profile = tempfile.TemporaryDirectory(
            prefix="fleet-chromium-", ignore_cleanup_errors=True
        )
        self._process = subprocess.Popen(
            [
                executable,
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, so exit stops every helper
        )
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None

    def __enter__(self) -> Browser:
        port = self._devtools_port()
        targets = wait_for(
            lambda: [t for t in _get_json(port, "/json/list") if t["type"] == "page"],
            timeout=30,
            what="a Chromium page target",
        )
        self._ws = connect(targets[0]["webSocketDebuggerUrl"], max_size=64 * 2**20)
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ws is not None:
            self._ws.close()
        os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(10)
        if self._process.stderr is not None:
            self._process.stderr.close()
        self._profile.cleanup()

    def _devtools_port(self) -> int:
        assert self._process.stderr is not None
        for line in self._process.stderr:  # Chromium prints the address it listens on
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if found:
                return int(found.group(1))
        raise RuntimeError(f"Chromium exited ({self._process.wait()}) before listening")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # skip the events Chromium sends meanwhile
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        result = self.call(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''"
        )
        return str(result["result"].get("value", ""))

    def wait_for_text(self, *needles: str, timeout: float = 60) -> str:
        def shown() -> str:
            text = self.text()
            return text if all(n in text for n in needles) else ""

        return wait_for(
            shown,
            timeout=timeout,
            what=f"the page to show {needles}",
            interval=0.3,
        )

    def wait_rendered(self, timeout: float = 60) -> None:
        """Until every chart has drawn and every data grid has its canvas (they draw late)."""
        script = """(() => {
            const shown = (sel) => [...document.querySelectorAll(sel)].filter(
                (e) => e.getClientRects().length > 0);  // not in a hidden tab or expander
            const charts = shown('[data-testid="stVegaLiteChart"]');
            const grids = shown('[data-testid="stDataFrame"]');
            const drawn = (e) => e.querySelector('canvas, svg') !== null
                && e.getBoundingClientRect().width > 50;
            return charts.every(drawn) && grids.every(
                (g) => g.querySelector('[data-testid="data-grid-canvas"]') !== null);
        })()"""

        def rendered() -> bool:
            result = self.call("Runtime.evaluate", expression=script)
            return bool(result["result"].get("value"))

        wait_for(rendered, timeout=timeout, what="charts and tables to draw", interval=0.3)

    def screenshot(self, path: Path) -> Path:
        """Save the page as a PNG (a test artifact for people to look at; assertions are on
        the page text). Charts that have not drawn within the wait are shot as they are."""
        with contextlib.suppress(DeadlineExceeded):
            self.wait_rendered(timeout=20)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


def _get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())
