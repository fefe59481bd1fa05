"""The dashboard in headless Chromium, kept open (DevTools protocol over a pipe, tests/observe/browser.py):
hostile names and values are shown as text and never run; the page keeps working when the run it shows
is deleted or a link names a run that is gone; names with commas can be compared."""

from __future__ import annotations

import json
import shutil
from urllib.parse import quote

import pytest
from tests.observe.browser import BROWSER, Browser

from hamrah.observe.dashboard import DashboardConfig, DashboardServer, Source
from hamrah.observe.runs import RunFolder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER is None, reason="no chromium: scripts/install.sh installs it"),
]
X = '"\'><img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script><svg onload="window.__pwned=1">'
LIVE = "document.getElementById('conn').textContent === 'live'"
ERROR = "document.getElementById('conn').textContent"


def _run(root, name, rows, **files):
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for file, obj in files.items():
        (root / name / file.replace("_", ".")).write_text(json.dumps(obj))
    return root / name


@pytest.fixture
def dashboard(tmp_path):
    (tmp_path / "runs").mkdir()
    srv = DashboardServer(Source(RunFolder(tmp_path / "runs")), DashboardConfig(enabled=True, port=0))
    yield srv.start()
    srv.stop()


def test_hostile_names_and_values_are_text_never_script(tmp_path, dashboard):
    runs = tmp_path / "runs"
    name = "run" + X.replace("/", "_")  # a folder name cannot hold "/"
    _run(
        runs,
        name,
        [{"round": 1, "test_accuracy": 0.5, X: 1, "phases": {X: 1.0}, "bytes_by_aggregator": {X: [1, 2]}}],
        summary_json={"config": {X: X, "privacy": {"target_epsilon": X}}, "refusals": {X: 2}, "best_accuracy": X},
    )
    _run(runs, "failed", [{"round": 1}], failed_json={"error": X, "log": [X]})
    (runs / "lab").mkdir()
    cells = [("__proto__", "toString"), ("constructor", "x"), (X, X)]  # names that are JS object internals
    (runs / "lab" / "rows.jsonl").write_text(
        "".join(json.dumps({"defence": d, "attack": a, "main_accuracy": 0.5}) + "\n" for d, a in cells)
    )
    with Browser(tmp_path / "profile") as b:
        for query in ("?run=failed#overview", f"?run={name}#rounds", "#compare", "?run=lab#compare"):
            b.open(f"http://127.0.0.1:{dashboard.port}/{query.replace(name, quote(name))}")
            assert b.wait(LIVE), b.js(ERROR)  # drew the state and the stream; no page error
            assert b.js("window.__pwned") is None
            assert b.js("document.querySelectorAll('main img, main script, main [onerror], main [onload]').length") == 0
            if query.startswith("?run=failed"):
                assert b.js("document.getElementById('error-box').textContent") == "failed: " + X
        assert X in b.js("document.getElementById('chart-lab').textContent")  # the lab's names, as text
        assert b.js("typeof Object.prototype.x") == "undefined"  # nothing leaked onto every object


def test_the_page_follows_a_run_that_is_deleted_or_a_link_to_one_that_is_gone(tmp_path, dashboard):
    runs = tmp_path / "runs"
    _run(runs, "a", [{"round": r, "test_accuracy": 0.5} for r in (1, 2)], summary_json={"best_accuracy": 0.5})
    _run(runs, "b", [{"round": r, "test_accuracy": 0.7} for r in (1, 2, 3)], summary_json={"best_accuracy": 0.7})
    url = f"http://127.0.0.1:{dashboard.port}/"
    with Browser(tmp_path / "profile") as b:
        b.open(url + "?run=b#overview")
        assert b.wait(LIVE) and b.js("document.getElementById('stat-round').textContent") == "3"
        shutil.rmtree(runs / "b")  # deleted (or renamed) while shown
        assert b.wait("document.getElementById('run-select').value === 'a'"), b.js(ERROR)
        assert b.wait(LIVE + " && document.getElementById('stat-round').textContent === '2'"), b.js(ERROR)
        assert b.js("new URLSearchParams(location.search).get('run')") == "a"  # a reload shows what is shown
        _run(runs, "c", [{"round": 1}])  # a new run appears while open
        assert b.wait("[...document.getElementById('run-select').options].some((o) => o.value === 'c')")

        b.open(url + "?run=gone#overview")  # a bookmark to a run deleted since
        assert b.wait(LIVE + " && document.getElementById('run-select').value === 'a'"), b.js(ERROR)
        assert b.js("document.getElementById('stat-round').textContent") == "2"


def test_runs_with_commas_in_their_names_are_compared(tmp_path, dashboard):
    runs = tmp_path / "runs"
    for name, acc in (("lr=0.1,mu=0", 0.25), ("lr=0.1,mu=1", 0.75)):
        _run(runs, name, [{"round": r, "test_accuracy": acc} for r in (1, 2)])
    with Browser(tmp_path / "profile") as b:
        b.open(f"http://127.0.0.1:{dashboard.port}/#compare")
        assert b.wait(LIVE)
        box = "document.querySelector('#compare-list input[value=\"lr=0.1,mu=0\"]')"
        assert b.wait(f"{box} !== null && {box}.checked"), b.js(ERROR)  # the list is drawn, both ticked
        b.js(f"{box}.click()")  # untick: one left
        got = b.wait(
            "(() => { const rows = [...document.querySelectorAll('#compare-table tr')].slice(1)"
            ".map((tr) => [...tr.children].map((td) => td.textContent));"
            " return rows.length === 1 ? rows : null; })()"
        )
        assert got == [["lr=0.1,mu=1", "running", "2", "0.7500", "-"]], b.js(ERROR)
