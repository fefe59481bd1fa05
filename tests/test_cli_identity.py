"""The identity commands as users type them: `hamrah provision` and `hamrah tokens --server-file`."""

from __future__ import annotations

import os
import stat

from hamrah.cli import main
from hamrah.transport.identity import token_digest


def test_provision_writes_one_kit_per_party(tmp_path, capsys):
    assert main(["provision", str(tmp_path / "pki"), "--devices", "2", "--hosts", "127.0.0.1"]) == 0
    kit = tmp_path / "pki" / "devices" / "device-0001"
    assert sorted(p.name for p in kit.iterdir()) == [
        "ca.pem",
        "client.key",
        "client.pem",
        "identity.pem",
        "signing.key",
        "token",
    ]
    assert stat.S_IMODE(os.stat(kit / "token").st_mode) == 0o600
    assert "--credentials" in capsys.readouterr().out


def test_provision_with_a_bad_count_prints_one_line_and_writes_nothing(tmp_path, capsys):
    assert main(["provision", str(tmp_path / "pki"), "--devices", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--devices 0" in err and "Traceback" not in err
    assert not (tmp_path / "pki").exists()


def test_tokens_writes_the_devices_tokens_and_the_servers_digests_0600(tmp_path):
    dev, srv = tmp_path / "devices.txt", tmp_path / "server.txt"
    assert main(["tokens", str(dev), "--count", "3", "--server-file", str(srv)]) == 0
    tokens = dev.read_text().split()
    assert srv.read_text().split() == [f"sha256:{token_digest(t)}" for t in tokens]
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in (dev, srv)} == {0o600}


def test_bad_retry_settings_print_one_line(tmp_path, capsys):
    store = tmp_path / "s.db"
    store.write_bytes(b"")
    for flag, value in (("--retry-for", "-1"), ("--max-backoff", "0")):
        assert main(["device", "--server", "127.0.0.1:1", "--store", str(store), flag, value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and flag in err


def test_a_missing_device_kit_prints_one_line(tmp_path, capsys):
    store = tmp_path / "s.db"
    store.write_bytes(b"")
    assert (
        main(["device", "--server", "127.0.0.1:1", "--store", str(store), "--credentials", str(tmp_path / "kit")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err and "hamrah provision" in err
