"""Damaged and hostile config files on every command that reads one (run, partition, sweep, lab, server, device,
fleet, store import): exit 2, one ``hamrah: error:`` line naming the file and what is wrong, no traceback, nothing
written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.test_cli import SMALL

from hamrah.cli import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HAMRAH_DATA", raising=False)


DAMAGED = {
    "syntax": (b"[data\nnum_clients = ", "not valid TOML (Expected ']'"),
    "binary": (bytes(range(128, 256)) * 4, "cannot read config ('utf-8' codec can't decode"),
    "nul-bytes": (b"\x00\x01\x02", "not valid TOML"),
    "empty": (b"", "empty; expected at least a [data] or [task] section"),
    "huge-int": (SMALL.replace("seed = 0", "seed = 1" + "0" * 30).encode(), "run.seed = 1000000000000"),
    "huge-literal": (b"[run]\nseed = 1" + b"0" * 5000, "an integer of thousands of digits"),
    "deep-array": (b"[run]\nseed = " + b"[" * 3000 + b"]" * 3000, "arrays or inline tables nested hundreds deep"),
    "deep-table": (("[data" + ".k" * 3000 + "]\nx = 1").encode(), "data.k.k.k.k.k.k.k.k"),
    "nul-text": (SMALL.replace('partition = "iid"', 'path = "a\\u0000b"').encode(), "data.path = 'a\\x00b'"),
}
COMMANDS = {
    "run": ["run", "{cfg}", "--out", "out"],
    "partition": ["partition", "{cfg}"],
    "sweep": ["sweep", "{cfg}", "--lrs", "0.1", "--out", "out"],
    "lab": ["lab", "{cfg}", "--out", "out"],
    "server": ["server", "--config", "{cfg}", "--state", "out", "--port", "0"],
    "device": ["device", "--server", "127.0.0.1:1", "--store", "store.db", "--config", "{cfg}"],
    "fleet": ["fleet", "--server", "127.0.0.1:1", "--devices", "1", "--config", "{cfg}", "--stores", "out"],
    "store": ["store", "import", "--config", "{cfg}", "--store", "out/s.db"],
}
LAB_ONLY_EMPTY = "a lab config needs a [lab] table"  # a lab file with no [lab] says so first


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamrah: error: "), err
    return err[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", DAMAGED)
def test_a_damaged_config_file_is_one_line_naming_it(tmp_path, capsys, command, kind):
    content, message = DAMAGED[kind]
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(content)
    (tmp_path / "store.db").write_bytes(b"")  # hamrah device checks its store first
    line = _error([a.format(cfg=cfg) for a in COMMANDS[command]], capsys)
    expected = LAB_ONLY_EMPTY if command == "lab" and kind == "empty" else message
    assert line.startswith(f"hamrah: error: {cfg}: ") and expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "store.db"]


@pytest.mark.parametrize("command", ["run", "partition", "lab", "server"])
def test_a_config_path_that_is_missing_a_folder_or_unreadable_is_one_line(tmp_path, capsys, monkeypatch, command):
    def argv(cfg: Path) -> list[str]:
        return [a.format(cfg=cfg) for a in COMMANDS[command]]

    assert "config file not found" in _error(argv(tmp_path / "absent.toml"), capsys)
    (tmp_path / "folder.toml").mkdir()
    assert "cannot read config ([Errno 21] Is a directory" in _error(argv(tmp_path / "folder.toml"), capsys)
    locked = tmp_path / "locked.toml"
    locked.write_text(SMALL)
    read_text = Path.read_text

    def denied(self, *args, **kwargs):  # chmod 000 does not stop root (CI containers), so deny it here
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    assert "cannot read config ([Errno 13] Permission denied" in _error(argv(locked), capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["absent.toml", "folder.toml", "locked.toml"][1:]


def test_a_server_config_with_a_bad_dashboard_or_server_table_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "server.toml"
    argv = COMMANDS["server"][:-4] + ["--state", "state"]
    for extra, message in [
        ('[dashboard]\nenabled = true\ntoken_file = "a\\u0000b"\n', "dashboard.token_file = 'a\\x00b'"),
        ("[server]\ngoal_count = 1" + "0" * 25 + "\n", "server.goal_count = 1000000"),
        ("[server]\naggregator = {name = 'norm_bound', bound = 0.1, noise_std = 0.1, seed = 'x'}\n", "seed = 'x'"),
        ("[server]\naggregator = {name = 'median', x = [1]}\n", "server.aggregator.x = [1]: expected a number"),
    ]:
        cfg.write_text(SMALL + extra)
        assert message in _error([a.format(cfg=cfg) for a in argv], capsys)
    assert not (tmp_path / "state").exists()


def test_a_byte_order_mark_is_read_past(tmp_path, capsys):
    cfg = tmp_path / "bom.toml"
    cfg.write_bytes(b"\xef\xbb\xbf" + SMALL.encode())
    assert main(["partition", str(cfg)]) == 0
    assert '"num_clients": 10' in capsys.readouterr().out


def test_damaged_configs_through_the_real_command_leave_no_traceback(tmp_path):
    """End to end in a fresh interpreter: the exit code and stderr a user sees."""
    env = {k: v for k, v in os.environ.items() if k != "HAMRAH_DATA"}
    for kind in ("binary", "deep-table"):
        cfg = tmp_path / f"{kind}.toml"
        cfg.write_bytes(DAMAGED[kind][0])
        proc = subprocess.run(
            [sys.executable, "-m", "hamrah.cli", "run", str(cfg), "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith(f"hamrah: error: {cfg}: ") and DAMAGED[kind][1] in lines[0]
        assert not (tmp_path / "out").exists()
