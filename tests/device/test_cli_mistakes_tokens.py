"""Mistakes with `hamrah tokens`: one ``hamrah: error:`` line, exit 2, and no file written or made
private when it fails."""

from __future__ import annotations

import os
import stat

import pytest

from hamrah.cli import main
from hamrah.core.errors import ConfigError
from hamrah.device.fleet import make_tokens


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamrah: error: "), err
    return err[0]


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_folder_is_refused_and_keeps_its_mode(tmp_path, capsys):
    folder = tmp_path / "DIR"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert "is a folder" in _error(["tokens", str(folder), "--count", "3"], capsys)
    assert _mode(folder) == 0o755


@pytest.mark.parametrize("content, word", [(b"", "holds 0 tokens"), (b"\xff\xfe\x00binary", "not a text file")])
def test_an_empty_or_binary_file_is_refused_unchanged(tmp_path, capsys, content, word):
    f = tmp_path / "tokens.txt"
    f.write_bytes(content)
    f.chmod(0o644)
    assert word in _error(["tokens", str(f), "--count", "3"], capsys)
    assert _mode(f) == 0o644 and f.read_bytes() == content


def test_a_path_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert "lies under the file" in _error(["tokens", str(tmp_path / "afile" / "x"), "--count", "3"], capsys)


def test_a_folder_as_server_file_writes_no_tokens(tmp_path, capsys):
    tk = tmp_path / "tk"
    tk.mkdir()
    line = _error(["tokens", str(tk / "t6"), "--count", "3", "--server-file", str(tk)], capsys)
    assert "is a folder" in line and list(tk.iterdir()) == []


@pytest.mark.parametrize("count", ["0", "-5", "1000001"])
def test_a_count_out_of_range_is_refused(tmp_path, capsys, count):
    line = _error(["tokens", str(tmp_path / "t"), "--count", count], capsys)
    assert f"--count {count}: expected an integer from 1 to 1,000,000" in line
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="token count 0"):
        make_tokens(tmp_path / "t", 0)


def test_too_few_tokens_write_no_server_file(tmp_path, capsys):
    f = tmp_path / "tokens.txt"
    f.write_text("a\nb\n")
    assert "holds 2 tokens" in _error(["tokens", str(f), "--count", "3", "--server-file", str(tmp_path / "s")], capsys)
    assert not (tmp_path / "s").exists()


def test_a_line_with_a_space_is_refused_by_number(tmp_path, capsys):
    f = tmp_path / "tokens.txt"
    f.write_text("# the lab's devices\na\n\nb c\nd\n")
    assert "line 4 is not one token" in _error(["tokens", str(f), "--count", "2"], capsys)
    f.write_text("# the lab's devices\na\nd\n")
    assert make_tokens(f, 2) == ["a", "d"]


def test_the_server_file_cannot_be_the_tokens_file(tmp_path, capsys):
    f = tmp_path / "tokens.txt"
    assert main(["tokens", str(f), "--count", "2"]) == 0
    before = f.read_text()
    assert "would overwrite" in _error(["tokens", str(f), "--count", "2", "--server-file", str(f)], capsys)
    assert f.read_text() == before
