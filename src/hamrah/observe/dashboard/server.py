"""The dashboard's HTTP server (the standard library's threading server): static pages, a JSON API,
a server-sent-events stream and Prometheus ``/metrics``. Read-only: every route is a GET.

Routes: ``/`` (the page), ``/app.js``, ``/app.css``, ``/api/runs``, ``/api/run?name=``,
``/api/compare?names=a,b``, ``/api/live``, ``/api/stream?run=`` (server-sent events: the state is
pushed when it changes), ``/metrics``. With a token file, each request carries the token as
``Authorization: Bearer``, as the ``hamrah_dashboard`` cookie, or once as ``?token=`` on ``/`` (which
sets the cookie and redirects, so the token leaves the address bar). Data comes from a
:class:`Source`: run folders and, on a live server, its telemetry. It runs in its own threads: the
server's event loop is never blocked by a viewer.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from hamrah.core.errors import ConfigError, HamrahError
from hamrah.observe.dashboard.config import DashboardConfig, TokenCheck, check_exposure, is_loopback
from hamrah.observe.dashboard.source import Source, encode, split_names
from hamrah.observe.prometheus import CONTENT_TYPE, TelemetryCollector, exposition
from hamrah.observe.runs import RunFolder

log = logging.getLogger("hamrah.dashboard")
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
COOKIE = "hamrah_dashboard"
POLL_S = 0.5  # how often a live stream looks for changes (a committed round is sent within this)
LIVE_S = 1.0  # the live telemetry alone is sent at most this often
HEARTBEAT_S = 10.0
COMPARE_SHOWN = 400  # records of each compared run (thinned; the chart needs no more)
JSON_TYPE = "application/json; charset=utf-8"
HEADERS = {  # on every answer: a read-only page of its own files, never framed, never sniffed
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class Handler(BaseHTTPRequestHandler):
    """One request; ``self.server`` is a :class:`DashboardServer`."""

    server_version = "hamrah-dashboard"
    sys_version = ""
    timeout = 30  # a client that sends nothing is dropped; it does not hold a thread for ever
    streaming = False  # the answer's headers are sent: an error can no longer be answered
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args) -> None:  # the default prints every request to stderr
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes | None, ctype: str = JSON_TYPE, headers: dict | None = None) -> None:
        """Send an answer (``body`` None: a stream follows, without a length)."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if body is not None:
            self.send_header("Content-Length", str(len(body)))
        for k, v in {**HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if body is not None and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, encode({"error": message, "status": int(status)}))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's errors (a malformed request line, a header too long) as the
        dashboard's own: a one-line JSON reason, with the same headers."""
        self.close_connection = True
        try:
            short = HTTPStatus(code).phrase
        except ValueError:
            short = "error"
        self._error(code, message or short)

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # any other method (OPTIONS, TRACE, PROPFIND, ...): 405 like POST
            return self.do_POST
        raise AttributeError(name)

    def _host_allowed(self) -> bool:
        """An open dashboard (no token) on loopback answers only to a loopback name in ``Host``: a web
        page that rebinds its own name to 127.0.0.1 (DNS rebinding) reads nothing."""
        if self.server.tokens.required or not is_loopback(self.server.cfg.host):
            return True
        host = self.headers.get("Host")
        if host is None:
            return True  # not a browser (HTTP/1.0 tools)
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name.strip("[]").lower())

    def _token(self, query: dict) -> tuple[str | None, bool]:
        """Return (the token offered, whether it came in the address)."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:].strip(), False
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            cookie = SimpleCookie()
        if COOKIE in cookie:
            return cookie[COOKIE].value, False
        return (query.get("token") or [None])[0], True

    def do_POST(self) -> None:  # read-only: nothing is ever changed through the dashboard
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "the dashboard is read-only; expected GET")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        try:
            url = urlsplit(self.path)
            query = parse_qs(url.query, max_num_fields=8)
        except ValueError:
            return self._error(HTTPStatus.BAD_REQUEST, "malformed address; expected a path and a short query")
        if not self._host_allowed():
            return self._error(
                HTTPStatus.FORBIDDEN,
                "the dashboard answers only to a loopback host name (127.0.0.1, localhost, [::1]); "
                "set a token_file to serve it under another name",
            )
        token, in_url = self._token(query)
        if not self.server.tokens.allows(token):
            self.server.refused += 1
            return self._error(
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong dashboard token; expected Authorization: Bearer <token>, or /?token=<token> once",
            )
        if in_url and token and url.path == "/" and self.server.tokens.required:
            cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/" + ("; Secure" if self.server.tls else "")
            return self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
        try:
            self._route(url.path, query)
        except HamrahError as e:
            if not self.streaming:
                self._error(HTTPStatus.NOT_FOUND, str(e))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass

    def _route(self, path: str, query: dict) -> None:
        src = self.server.source
        if path == "/":
            return self._send(HTTPStatus.OK, self.server.page(query), STATIC["/"][1])
        if path in STATIC:
            name, ctype = STATIC[path]
            return self._send(HTTPStatus.OK, self.server.static(name), ctype)
        if path == "/api/runs":
            return self._send(HTTPStatus.OK, encode({"live": src.telemetry is not None, "runs": src.runs()}))
        if path == "/api/run":
            return self._send(HTTPStatus.OK, encode(src.run(self._one(query, "name"))))
        if path == "/api/compare":
            names = split_names(self._one(query, "names"))[:12]
            return self._send(HTTPStatus.OK, encode({"runs": [src.run(n, shown=COMPARE_SHOWN) for n in names]}))
        if path == "/api/live":
            return self._send(HTTPStatus.OK, encode(src.live()))
        if path == "/api/stream":
            return self._stream(query)
        if path == "/metrics" and self.server.cfg.metrics:
            body = exposition(TelemetryCollector(src.telemetry, src.records))
            return self._send(HTTPStatus.OK, body, CONTENT_TYPE)
        return self._error(
            HTTPStatus.NOT_FOUND,
            f"no page {path[:80]!r}; expected /, /api/runs, /api/run, /api/compare, /api/live, /api/stream or /metrics",
        )

    @staticmethod
    def _one(query: dict, key: str) -> str:
        values = query.get(key)
        if not values or len(values) != 1 or len(values[0]) > 2000:
            raise ConfigError(f"expected one ?{key}= parameter")
        return values[0]

    def _state(self, run: str | None, with_run: bool = True) -> bytes:
        """The stream's message; without a run named, the first run (what the page shows first). The
        run (its records, config, log) is sent only when its files changed (``with_run``): a change of
        the live telemetry alone sends the runs list and the telemetry."""
        src = self.server.source
        runs = src.runs()
        msg = {"runs": runs, "live": src.live()}
        if with_run:
            name = run if run is not None else (runs[0]["name"] if runs else None)
            try:
                msg["run"] = src.run(name) if name is not None else None
            except ConfigError:  # deleted or renamed while watched: the page picks another
                msg["run"] = None
        return encode(msg)

    def _stream(self, query: dict) -> None:
        """Push the state (runs, the chosen run, live telemetry) as server-sent events when it changes."""
        run = (query.get("run") or [None])[0]
        if run is not None:
            self.server.source.folder.folder(run)  # an unknown run: 404 now, not a stream of errors
        if not self.server.streams.acquire(blocking=False):
            return self._error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many live viewers; expected at most dashboard.max_streams = {self.server.cfg.max_streams}",
            )
        try:
            self._send(HTTPStatus.OK, None, "text/event-stream; charset=utf-8")
            self.streaming = self.close_connection = True
            last, beat = None, time.monotonic()
            while not self.server.stopping.is_set():
                stamp = self.server.source.stamp()
                files_changed = last is None or stamp[0] != last[0] or stamp[2] != last[2]
                if files_changed or (stamp != last and time.monotonic() - beat >= LIVE_S):
                    self.wfile.write(b"event: state\ndata: " + self._state(run, files_changed) + b"\n\n")
                    self.wfile.flush()
                    last, beat = stamp, time.monotonic()
                elif time.monotonic() - beat > HEARTBEAT_S:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    beat = time.monotonic()
                self.server.stopping.wait(POLL_S)
        finally:
            self.server.streams.release()


class DashboardServer(ThreadingHTTPServer):
    """Serve a :class:`Source` on ``cfg.host:cfg.port`` in a background thread.

    Args:
        source: what to show.
        cfg: address, tokens, limits (checked: a non-loopback address needs allow_remote and a token).
        tls: (cert, key, client_ca or None) to serve HTTPS, with client certificates required when a
            CA is given (the server's own mTLS choice); None: plain HTTP.

    Raises:
        ConfigError: the address is refused (see :func:`check_exposure`) or cannot be bound.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, source: Source, cfg: DashboardConfig, tls: tuple[str, str, str | None] | None = None):
        check_exposure(cfg)
        self.source, self.cfg, self.tls = source, cfg, tls is not None
        self.tokens = TokenCheck(cfg.token_file)
        self.streams = threading.BoundedSemaphore(cfg.max_streams)
        self.stopping = threading.Event()
        self.refused = 0
        self._static: dict[str, bytes] = {}
        try:
            super().__init__((cfg.host, cfg.port), Handler)
        except OSError as e:
            raise ConfigError(
                f"dashboard: cannot listen on {cfg.host}:{cfg.port} ({e.strerror}); expected a free "
                "port (dashboard.port, 0: any)"
            ) from None
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            if tls[2]:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(tls[2])
            self.socket = ctx.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )  # in the handler's thread
        self.port = self.server_address[1]
        self._thread: threading.Thread | None = None

    def page(self, query: dict) -> bytes:
        """Return the page with its first state embedded (a JSON data block, never executed: the page
        draws it before any event arrives, so the first paint and a headless browser's DOM hold data).
        The run is ``?run=`` (default: the first); the comparison ``?compare=a,b`` (default: the first 8)."""
        src = self.source
        runs = src.runs()
        run = (query.get("run") or [None])[0]
        names = [r["name"] for r in runs]
        if run not in names:
            run = names[0] if names else None
        given = [n for n in split_names((query.get("compare") or [""])[0]) if n in names]
        state = {
            "runs": runs,
            "live": src.live(),
            "run": src.run(run) if run is not None else None,
            "compare": [src.run(n, shown=COMPARE_SHOWN) for n in (given or names[:8])],
        }
        blob = encode(state).replace(b"<", b"\\u003c")  # '<' only occurs in strings: no text can end the block
        tag = b'<script src="/app.js"></script>'
        return self.static("index.html").replace(
            tag, b'<script type="application/json" id="initial">' + blob + b"</script>\n" + tag
        )

    def static(self, name: str) -> bytes:
        if name not in self._static:
            self._static[name] = resources.files("hamrah.observe.dashboard").joinpath("static", name).read_bytes()
        return self._static[name]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.cfg.host}:{self.port}/"

    def start(self) -> DashboardServer:
        """Serve in a daemon thread; return self."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="hamrah-dashboard", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end the live streams."""
        self.stopping.set()
        self.shutdown()
        self.server_close()


def serve_folder(root: str | Path, cfg: DashboardConfig) -> DashboardServer:
    """Return a started dashboard over the runs under ``root`` (``hamrah dashboard RUNS_DIR``)."""
    return DashboardServer(Source(RunFolder(root)), cfg).start()


__all__ = ["DashboardServer", "Handler", "Source", "serve_folder"]
