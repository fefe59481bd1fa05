"""The dashboard against what an attacker (or a damaged disk) can put in a runs folder or a request:
links out of the folder, pipes, nesting that breaks a parser, undecodable names, huge runs, hostile
Host headers and methods. Every answer is still an answer, and nothing outside the folder is read."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket

import pytest

from hamrah.observe.dashboard import DashboardConfig, DashboardServer, Source
from hamrah.observe.runs import RunFolder, thin


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(root, token_file=None):
        srv = DashboardServer(
            Source(RunFolder(root)), DashboardConfig(enabled=True, port=0, token_file=token_file)
        ).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def get(srv, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, resp


def _run(root, name, line='{"round": 1, "test_accuracy": 0.5}\n'):
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "metrics.jsonl").write_text(line)
    return root / name


def test_links_out_of_the_folder_are_not_followed(tmp_path, serve):
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("TOP-SECRET-LINE\n")
    (secret / "conf.json").write_text('{"SECRET_KEY": "TOP-SECRET-JSON"}')
    runs = tmp_path / "runs"
    run = _run(runs, "a")
    (run / "server.log").symlink_to(secret / "secret.txt")
    (run / "config.json").symlink_to(secret / "conf.json")
    (runs / "b").symlink_to(secret)  # a linked folder is not a run
    _run(secret, "c")
    (runs / "c").symlink_to(secret / "c")
    srv = serve(runs)
    status, body, _ = get(srv, "/api/run?name=a")
    assert status == 200 and json.loads(body)["records"] == [{"round": 1, "test_accuracy": 0.5}]
    assert b"TOP-SECRET" not in body
    assert [r["name"] for r in json.loads(get(srv, "/api/runs")[1])["runs"]] == ["a"]
    assert get(srv, "/api/run?name=c")[0] == 404


def test_a_pipe_named_like_a_run_file_does_not_hang_the_dashboard(tmp_path, serve):
    run = _run(tmp_path, "a")
    os.mkfifo(run / "server.log")  # opening a pipe for reading waits for a writer
    os.mkfifo(run / "summary.json")
    srv = serve(tmp_path)
    status, body, _ = get(srv, "/api/run?name=a")
    assert status == 200 and json.loads(body)["rounds"] == 1


def test_a_file_nested_too_deep_for_the_parser_is_one_damaged_run(tmp_path, serve):
    bad = _run(tmp_path, "bad", '{"round": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    (bad / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    (bad / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    deep = _run(tmp_path, "deep")  # parses, but nests deeper than the page is sent
    (deep / "config.json").write_text('{"a": ' + "[" * 900 + "]" * 900 + "}")
    _run(tmp_path, "good")
    srv = serve(tmp_path)
    status, body, _ = get(srv, "/")
    assert status == 200 and b'"name":"good"' in body
    runs = {r["name"]: r for r in json.loads(get(srv, "/api/runs")[1])["runs"]}
    assert runs["bad"]["status"] == "failed" and "summary.json cannot be read" in runs["bad"]["error"]
    assert runs["bad"]["rounds"] == 1 and runs["good"]["rounds"] == 1
    status, body, _ = get(srv, "/api/run?name=deep")
    assert status == 200 and "not shown" in json.dumps(json.loads(body)["config"])


def test_a_huge_summary_is_unreadable_not_loaded(tmp_path, serve):
    run = _run(tmp_path, "a")
    with open(run / "summary.json", "w") as fh:
        fh.write('{"pad": "' + "x" * (9 * 2**20) + '"}')
    srv = serve(tmp_path)
    status, body, _ = get(srv, "/api/run?name=a")
    assert status == 200 and len(body) < 100_000
    assert json.loads(body)["error"].startswith("summary.json cannot be read")


def test_a_run_named_in_bytes_that_are_not_utf8_can_be_opened(tmp_path, serve):
    run = tmp_path / os.fsdecode(b"lr\xff1")
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"round": 1, "note": "\\udcff"}\n')  # a lone surrogate in the JSON too
    srv = serve(tmp_path)
    status, body, _ = get(srv, "/api/runs")
    body.decode("utf-8")  # strict: no lone surrogate escapes reach the page
    assert b"\\udcff" not in body and json.loads(body)["runs"][0]["name"] == "lr\ufffd1"
    status, body, _ = get(srv, "/api/run?name=lr%EF%BF%BD1")
    assert status == 200 and json.loads(body)["records"][0]["note"] == "\ufffd"


def test_a_run_of_many_rounds_is_sent_thinned(tmp_path, serve):
    rows = "".join(json.dumps({"round": r, "test_accuracy": r / 5000}) + "\n" for r in range(1, 5001))
    _run(tmp_path, "long", rows)
    srv = serve(tmp_path)
    run = json.loads(get(srv, "/api/run?name=long")[1])
    assert run["rounds"] == 5000 and run["records_total"] == 5000 and len(run["records"]) == 1000
    got = [r["round"] for r in run["records"]]
    assert got[0] == 1 and got[-300:] == list(range(4701, 5001)) and got == sorted(got)
    page = get(srv, "/")[1]
    assert len(page) < 200_000  # the run and its comparison, thinned: not 5000 rounds twice
    assert thin(list(range(10)), 5, 2) == [0, 2, 5, 8, 9] and thin([1, 2], 5) == [1, 2]


def test_names_with_commas_can_be_compared(tmp_path, serve):
    _run(tmp_path, "lr=0.1,mu=0")
    _run(tmp_path, "lr=0.1")
    srv = serve(tmp_path)
    status, body, _ = get(srv, "/api/compare?names=lr%253D0.1%252Cmu%253D0,lr%253D0.1")  # each name encoded
    assert status == 200 and [r["name"] for r in json.loads(body)["runs"]] == ["lr=0.1,mu=0", "lr=0.1"]


def test_headers_of_a_read_only_local_page(tmp_path, serve):
    _run(tmp_path, "a")
    srv = serve(tmp_path)
    for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"), ("/api/runs", "application/json")):
        status, _, resp = get(srv, path)
        assert status == 200 and resp.getheader("Content-Type") == f"{ctype}; charset=utf-8"
        assert resp.getheader("X-Content-Type-Options") == "nosniff"
        csp = resp.getheader("Content-Security-Policy")
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert resp.getheader("X-Frame-Options") == "DENY" and resp.getheader("Referrer-Policy") == "no-referrer"
    for method in ("OPTIONS", "TRACE", "PROPFIND"):  # every method but GET and HEAD: 405, as POST
        status, body, resp = get(srv, "/api/runs", method=method)
        assert status == 405 and json.loads(body)["error"].startswith("the dashboard is read-only")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")  # the standard library's own refusal
        head = b""
        while chunk := s.recv(4096):
            head += chunk
    assert head.startswith(b"HTTP/1.1 414") and b"nosniff" in head and b'"error"' in head


def test_an_open_dashboard_answers_only_to_a_loopback_host(tmp_path, serve):
    _run(tmp_path, "a")
    srv = serve(tmp_path)
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example"):  # DNS rebinding
        status, body, _ = get(srv, "/api/runs", headers={"Host": host})
        assert status == 403 and b'"name"' not in body
    for host in ("127.0.0.1", f"127.0.0.1:{srv.port}", "localhost:9000", "[::1]:80"):
        assert get(srv, "/api/runs", headers={"Host": host})[0] == 200
    token = "t0ken"
    digests = tmp_path / "digests"
    digests.write_text(hashlib.sha256(token.encode()).hexdigest() + "\n")
    guarded = serve(tmp_path, str(digests))  # with a token the name does not matter: the token does
    assert get(guarded, "/api/runs", headers={"Host": "dash.example", "Authorization": f"Bearer {token}"})[0] == 200


def test_no_token_needed_means_no_cookie_and_no_header_from_the_address(tmp_path, serve):
    _run(tmp_path, "a")
    srv = serve(tmp_path)
    status, _, resp = get(srv, "/?token=x%0d%0aSet-Cookie:%20evil=1")
    assert status == 200 and resp.getheader("Set-Cookie") is None
