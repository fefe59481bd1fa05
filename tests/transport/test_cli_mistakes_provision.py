"""Mistakes with `hamrah provision`: a plain file as the folder, a damaged CA or kit, a huge count: one
``hamrah: error:`` line naming the file, exit 2, and nothing written."""

from __future__ import annotations

import shutil

import pytest

from hamrah.cli import main
from hamrah.core.errors import ConfigError
from hamrah.transport.provision import provision


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamrah: error: "), err
    return err[0]


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    out = tmp_path_factory.mktemp("pki") / "pki"
    provision(out, 2)
    return out


def test_a_plain_file_as_the_folder_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert "is a file" in _error(["provision", str(tmp_path / "afile"), "--devices", "2"], capsys)


@pytest.mark.parametrize(
    "damaged, content, word",
    [
        ("ca/ca.pem", b"junk\n", "not a PEM certificate"),
        ("ca/ca.key", b"", "not a PEM private key"),
        ("devices/device-0001/client.pem", b"junk\n", "not a PEM certificate"),
    ],
)
def test_a_damaged_ca_or_kit_is_named_and_nothing_is_added(pki, tmp_path, capsys, damaged, content, word):
    out = tmp_path / "pki"
    shutil.copytree(pki, out)
    (out / damaged).write_bytes(content)
    before = _snapshot(out)
    line = _error(["provision", str(out), "--devices", "3"], capsys)
    assert f"{out / damaged}: {word}" in line and "hamrah provision" in line
    assert _snapshot(out) == before


def test_a_ca_certificate_missing_beside_its_key_is_refused(pki, tmp_path, capsys):
    out = tmp_path / "pki"
    shutil.copytree(pki, out)
    (out / "ca" / "ca.pem").unlink()
    before = _snapshot(out)
    assert "ca.pem: missing beside ca.key" in _error(["provision", str(out), "--devices", "2"], capsys)
    assert _snapshot(out) == before


def test_every_kit_is_checked_before_a_new_one_is_written(pki, tmp_path):
    out = tmp_path / "pki"
    shutil.copytree(pki, out)
    shutil.rmtree(out / "devices" / "device-0000")  # a gap: device-0000 would be made again
    (out / "devices" / "device-0001" / "client.pem").write_bytes(b"junk\n")
    with pytest.raises(ConfigError, match="device-0001/client.pem: not a PEM certificate"):
        provision(out, 3)
    assert sorted(p.name for p in (out / "devices").iterdir()) == ["device-0001"]


def test_a_huge_device_count_is_refused_before_any_work(tmp_path, capsys):
    line = _error(["provision", str(tmp_path / "pki"), "--devices", "100000000"], capsys)
    assert "--devices 100000000: expected at least 1 and at most 100,000" in line
    assert not (tmp_path / "pki").exists()
