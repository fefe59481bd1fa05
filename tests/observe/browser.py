"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: file
descriptors 3 and 4, messages ended by a NUL byte), so a test can evaluate JavaScript in a page that
stays open (read ``window.__pwned``, wait for a live update) with no dependency beyond the standard
library and the distribution's ``chromium``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

BROWSER = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _onto_3_and_4(read_end: int, write_end: int) -> None:
    a, b = os.dup(read_end), os.dup(write_end)  # above every open descriptor: dup2 clobbers neither
    os.dup2(a, 3)
    os.dup2(b, 4)


class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, profile):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        self.proc = subprocess.Popen(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4),  # kept after preexec_fn has put the pipes there
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _onto_3_and_4(to_chrome_r, from_chrome_w),
        )  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._id, self._buf = 0, b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command; return its result (events in between are dropped)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed its pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expression: str):
        """Evaluate ``expression`` in the page; return its value (JSON-able)."""
        res = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"].get("text", "exception"))
        return res["result"].get("value")

    def open(self, url: str) -> None:
        """Load ``url`` and wait until the dashboard's script has drawn it (``body[data-ready]``)."""
        self.call("Page.navigate", self.session, url=url)
        self.wait("document.body && document.body.dataset.ready === '1'")

    def wait(self, expression: str, limit_s: float = 30.0):
        """Return the value of ``expression`` once it is truthy (a bound on waiting, not a timing check)."""
        end = time.monotonic() + limit_s
        while True:
            value = self.js(expression)
            if value or time.monotonic() > end:
                return value
            time.sleep(0.1)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._r)
        os.close(self._w)
