"""Headless Chromium driven over the DevTools protocol, for the report and app browser tests.

Chromium is driven on a pipe (--remote-debugging-pipe: commands on fd 3, replies on fd 4, each
JSON message ended by a NUL byte), which needs nothing beyond the standard library.
"""

import base64
import fcntl
import io
import json
import os
import select
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

from PIL import Image

from helpers import require

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio", "--remote-debugging-pipe",
]
TIMEOUT = 60.0


def chromium() -> Path:
    """Debian's Chromium; a test that needs it skips without it, and fails under CI=true."""
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


class Browser:
    """One headless Chromium process and a DevTools session on its first page."""

    def __init__(self, binary: Path, profile: Path):
        to_chrome_r, self._out = os.pipe()
        self._in, from_chrome_w = os.pipe()
        # Park the child's ends above 9 so that moving them onto fds 3 and 4 cannot clobber them
        # (bash, unlike dash, redirects fds above 9).
        child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._log = open(profile.parent / f"{profile.name}-stderr.log", "wb")  # noqa: SIM115 - closed in close()
        script = f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-'
        self._proc = subprocess.Popen(
            ["/bin/bash", "-c", script, "bash", str(binary), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )
        os.close(child_r)
        os.close(child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next((t["targetId"] for t in targets if t["type"] == "page"), None)
        if page is None:
            page = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._in], [], [], remaining)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise ConnectionError(f"Chromium exited (code {self._proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, *, session: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._read_message(deadline))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result["result"]["value"]

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error log entries (failed loads) so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']['text']}")
        return found

    def open(self, url: str, width: int, height: int, *, mobile: bool = False, scale: float = 1.0) -> None:
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=scale, mobile=mobile)
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def screenshot(self) -> Image.Image:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        return image

    def close(self) -> None:
        with suppress(OSError, TimeoutError, ConnectionError, RuntimeError):
            self.call("Browser.close")
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._in)
        os.close(self._out)
        self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@contextmanager
def served_app(results: Path, log: Path, env: dict | None = None, options: tuple[str, ...] = ()):
    """`mnist-pipeline app` serving `results` on a free port; yields its URL, stops it after."""
    port = free_port()
    with open(log, "w") as output:
        server = subprocess.Popen(
            ["mnist-pipeline", "app", "--results", str(results), "--port", str(port), "--headless", *options],
            stdout=output, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(url + "_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, f"the app did not start:\n{log.read_text()}"
            time.sleep(0.3)
        yield url
    finally:
        # The launcher execs Streamlit, so this stops the server itself.
        server.terminate()
        server.wait(timeout=30)
