"""The dashboard over real HTTP on loopback: tokens, read-only routes, bad requests, exposure rules."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.observe.dashboard import DashboardConfig, DashboardServer, Source, TokenCheck, dashboard_config
from hamrah.observe.runs import RunFolder
from hamrah.observe.telemetry import Telemetry

TOKEN = "operator-secret-token"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, acc in (("a", 0.5), ("sweep/lr_0.1", 0.7)):
        (root / name).mkdir(parents=True)
        (root / name / "metrics.jsonl").write_text(
            "".join(
                json.dumps({"round": r, "test_accuracy": acc, "selection_s": 0.1, "epsilon": 0.5 * r}) + "\n"
                for r in (1, 2, 3)
            )
        )
        (root / name / "summary.json").write_text(
            json.dumps({"config": {"model": {"name": "2nn"}}, "best_accuracy": acc})
        )
    (root / "a" / "model.npz").write_bytes(b"\x00SECRET-WEIGHTS" * 100)  # never served
    return root


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    digests = tmp_path_factory.mktemp("tok") / "dashboard_tokens"
    digests.write_text("sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest() + "\n")
    tel = Telemetry()
    tel.checkin("d" * 64, True)
    tel.refused("e" * 64, "ProtocolError: update")
    srv = DashboardServer(
        Source(RunFolder(runs), tel), DashboardConfig(enabled=True, port=0, token_file=str(digests))
    ).start()
    yield srv
    srv.stop()


def get(srv, path, token=TOKEN, method="GET", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    hdrs = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, headers={**hdrs, **(headers or {})})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, resp


def test_pages_and_api_with_the_token(server):
    for path in ("/", "/app.js", "/app.css"):
        status, body, _ = get(server, path)
        assert status == 200 and body
        assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")  # nothing fetched from elsewhere
    status, body, _ = get(server, "/api/runs")
    names = [r["name"] for r in json.loads(body)["runs"]]
    assert status == 200 and names == ["a", "sweep/lr_0.1"]
    status, body, _ = get(server, "/api/run?name=a")
    run = json.loads(body)
    assert run["rounds"] == 3 and run["status"] == "finished" and len(run["records"]) == 3
    status, body, _ = get(server, "/api/compare?names=a,sweep/lr_0.1")
    assert [r["summary"]["best_accuracy"] for r in json.loads(body)["runs"]] == [0.5, 0.7]
    status, body, _ = get(server, "/metrics")
    assert (
        status == 200
        and b"hamrah_checkins_total 1.0" in body
        and b'hamrah_refusals_total{reason="ProtocolError: update"} 1.0' in body
    )


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
def test_a_request_without_the_right_token_is_refused(server, token):
    for path in ("/", "/api/runs", "/api/run?name=a", "/api/stream", "/metrics", "/app.js"):
        status, body, _ = get(server, path, token=token)
        assert status == 401 and b"token" in body and b"0.5" not in body


def test_token_in_the_address_becomes_a_cookie(server):
    status, _, resp = get(server, f"/?token={TOKEN}", token=None)
    assert status == 303 and resp.getheader("Location") == "/"
    cookie = resp.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _, _ = get(server, "/api/runs", token=None, headers={"Cookie": cookie.split(";")[0]})
    assert status == 200


def test_read_only_and_bad_requests_get_clear_errors(server):
    for method in ("POST", "PUT", "DELETE"):
        status, body, _ = get(server, "/api/runs", method=method)
        assert status == 405 and b"read-only" in body
    for path in (
        "/api/run?name=../../etc",
        "/api/run",
        "/api/run?name=a&name=b",
        "/nope",
        "/api/stream?run=zz",
        "/api/run?name=a/model.npz",
        "/a/model.npz",
    ):
        status, body, _ = get(server, path)
        assert status == 404 and "error" in json.loads(body)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:  # not HTTP at all
        s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        assert b"400" in s.recv(2000)  # the standard library's "Bad request" page
    assert get(server, "/api/runs")[0] == 200  # still serving


def test_no_update_contents_served(server, runs):
    bodies = b"".join(
        get(server, p)[1]
        for p in ("/api/runs", "/api/run?name=a", "/api/live", "/metrics", "/api/compare?names=a,sweep/lr_0.1")
    )
    assert b"SECRET-WEIGHTS" not in bodies and b"model.npz" not in bodies


def test_stream_pushes_the_state(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/api/stream?run=a", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    assert resp.fp.readline() == b"event: state\n"
    state = json.loads(resp.fp.readline().removeprefix(b"data: "))
    assert state["run"]["rounds"] == 3 and state["live"]["connected"] == 1
    conn.close()


def test_remote_addresses_need_allow_remote_and_a_token():
    with pytest.raises(ConfigError, match="not a loopback"):
        dashboard_config({"enabled": True, "host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="token_file"):
        dashboard_config({"enabled": True, "host": "0.0.0.0", "allow_remote": True})
    with pytest.raises(ConfigError, match="unknown key"):
        dashboard_config({"enabeld": True})
    with pytest.raises(ConfigError, match="expected int"):
        dashboard_config({"port": "80"})
    assert dashboard_config({"host": "::1"}).host == "::1"


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=60))
def test_only_the_operator_token_passes(token):
    check = TokenCheck.__new__(TokenCheck)
    check.digests = [hashlib.sha256(TOKEN.encode()).digest()]
    assert check.allows(token) == (token == TOKEN)


def test_token_file_must_hold_digests(tmp_path):
    bad = tmp_path / "t"
    bad.write_text("plaintext-operator-token\n")
    with pytest.raises(ConfigError, match="entry 1 is not a sha256 hex digest") as err:
        TokenCheck(str(bad))
    assert "plaintext" not in str(err.value)  # a token put there by mistake is not echoed
    with pytest.raises(ConfigError, match="cannot read"):
        TokenCheck(str(tmp_path / "missing"))


def test_mtls_dashboard_requires_a_client_certificate(runs, tmp_path):
    import ssl

    from hamrah.transport.certs import generate_tls

    files = generate_tls(tmp_path / "tls")
    srv = DashboardServer(
        Source(RunFolder(runs)),
        DashboardConfig(enabled=True, port=0),
        tls=(str(files["server"]), str(files["server_key"]), str(files["ca"])),
    ).start()
    try:
        ctx = ssl.create_default_context(cafile=str(files["ca"]))
        bare = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10, context=ctx)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):  # no client certificate: no answer
            bare.request("GET", "/api/runs")
            bare.getresponse().read()
        ctx.load_cert_chain(str(files["client"]), str(files["client_key"]))
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10, context=ctx)
        conn.request("GET", "/api/runs")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["runs"]
        assert srv.url.startswith("https://")
    finally:
        srv.stop()


def test_cli_refuses_a_remote_or_missing_folder_in_one_line(runs, tmp_path, capsys):
    from hamrah.cli import main

    assert main(["dashboard", str(runs), "--host", "0.0.0.0"]) == 2
    assert main(["dashboard", str(runs), "--host", "0.0.0.0", "--allow-remote"]) == 2
    assert main(["dashboard", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("hamrah: error: ") for line in err)
    assert err[0].startswith("hamrah: error: --host '0.0.0.0' is not a loopback address")
    assert "--allow-remote: expected --token-file too" in err[1] and "no such folder" in err[2]
    assert main(["dashboard", str(runs), "--port", "70000"]) == 2
    assert "--port 70000: expected a port in 0..65535" in capsys.readouterr().err


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), max_size=60))
def test_any_address_gets_a_clear_answer_and_never_a_file(server, tail):
    from urllib.parse import quote

    status, body, _ = get(server, "/" + quote(tail, safe="/?=&%.,"))
    assert status in (200, 303, 400, 404)  # never a server error
    assert b"SECRET-WEIGHTS" not in body and b"Traceback" not in body
    if status >= 400:
        assert "error" in json.loads(body)


def test_the_page_embeds_its_first_state_and_no_name_can_break_out(tmp_path):
    import re

    evil = "x</script><script>alert(1)</script><!--"
    (tmp_path / evil).mkdir(parents=True)  # "/" nests folders: the run name is the path
    (tmp_path / evil / "metrics.jsonl").write_text('{"round": 1, "test_accuracy": 0.5}\n')
    srv = DashboardServer(Source(RunFolder(tmp_path)), DashboardConfig(enabled=True, port=0)).start()
    try:
        status, body, _ = get(srv, "/", token=None)
    finally:
        srv.stop()
    html = body.decode()
    assert status == 200 and html.count("</script>") == 2 and "alert(1)</script>" not in html
    blob = re.search(r'<script type="application/json" id="initial">(.*?)</script>', html, re.S).group(1)
    state = json.loads(blob)
    assert state["run"]["name"] == evil and state["run"]["rounds"] == 1 and state["compare"][0]["name"] == evil


def test_a_damaged_summary_or_failure_file_is_shown_as_such_not_as_running(tmp_path):
    from hamrah.observe.runs import run_status

    for name in ("summary.json", "failed.json"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.jsonl").write_text('{"round": 1}\n')  # fresh records: it would look running
        (folder / name).write_text("{not json")
        got = run_status(folder, None, None)
        assert got.status == "failed" and got.error.startswith(f"{name} cannot be read")
