"""Careless and hostile parties between real ``run_party`` processes' code (threads of this process,
loopback gRPC with mutual TLS): a party restarted on other data, TLS files that do not fit."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from tests.parties.test_parties import _subset, _threads, _write, _write_csv

from hamrah.core.errors import ConfigError, PartyStopped
from hamrah.data.vertical import PartyTable
from hamrah.parties import load_party_config
from hamrah.parties.runner import run_party

SPLITNN = {"epochs": 2, "bottom_hidden": (4,), "cut_dim": 2, "top_hidden": (2,)}


def test_checkpoints_of_other_data_are_refused_not_resumed(tmp_path):
    """A host restarted (or run again in the same out folder) on a file with its columns in another
    order would load its checkpoints and hand back a network trained on the old columns; it is
    stopped, naming the checkpoint, before any message."""
    d = _subset()
    files = _write(tmp_path, SPLITNN, timeout_s=5, protocol="splitnn", tables=d)
    _threads({n: lambda n=n: run_party(load_party_config(files[n])) for n in files})
    h = d["host"]
    _write_csv(tmp_path / "host.csv", PartyTable(h.ids, h.features[:, ::-1], h.feature_names[::-1]))
    with pytest.raises(ConfigError, match=r"epoch-0001.npz: saved by a run on other data .*delete"):
        run_party(load_party_config(files["host"]))
    _write_csv(tmp_path / "host.csv", h)  # the same data again: resumes (nothing left to train)
    again = _threads({n: lambda n=n: run_party(load_party_config(files[n])) for n in files})
    assert again["host"]["model"] == "BottomModel"
    assert np.isfinite(again["guest"]["sent_bytes"]["host"])


def _both(files) -> tuple[dict, dict]:
    """Run every party's ``run_party`` in a thread; return their errors and seconds taken."""
    errors, took = {}, {}

    def party(name):
        t0 = time.monotonic()
        try:
            run_party(load_party_config(files[name]))
        except Exception as e:
            errors[name] = e
        took[name] = time.monotonic() - t0

    threads = [threading.Thread(target=party, args=(n,)) for n in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors, took


def _reversed_columns(tmp_path, table, name):
    _write_csv(
        tmp_path / f"{name}.csv",
        PartyTable(table.ids, table.features[:, ::-1], table.feature_names[::-1], table.labels),
    )


def test_a_party_refusing_its_checkpoints_stops_its_peer_at_once(tmp_path):
    """The host refuses its checkpoints (its file changed) and tells the guest, which stops at once
    with the kind of error; it used to wait timeout_s (and retry) for a host that would not come back.
    When both refuse theirs, each reports its own refusal (not the other's abort)."""
    d = _subset()
    files = _write(tmp_path, SPLITNN, timeout_s=20, protocol="splitnn", tables=d)
    _threads({n: lambda n=n: run_party(load_party_config(files[n])) for n in files})
    _reversed_columns(tmp_path, d["host"], "host")
    errors, took = _both(files)
    assert isinstance(errors.get("host"), ConfigError) and "saved by a run on other data" in str(errors["host"])
    assert isinstance(errors.get("guest"), PartyStopped) and errors["guest"].error == "ConfigError", errors
    assert took["guest"] < 10  # not timeout_s
    _reversed_columns(tmp_path, d["guest"], "guest")
    errors, _ = _both(files)
    assert all(isinstance(errors.get(n), ConfigError) and "other data" in str(errors[n]) for n in files), errors


@pytest.mark.parametrize(
    "key, file, match",
    [
        ("client_key", "tls/guest-client.key", r"tls.client_key = .*guest-client.key' is not the key of tls.client_"),
        ("key", "tls/guest-server.key", r"tls.key = .*guest-server.key' is not the key of tls.cert"),
        ("client_key", "tls/missing.key", r"tls.client_key = .*missing.key': cannot read"),
        ("ca", "tls/host-server.key", r"tls.ca = .*host-server.key': not a PEM certificate"),
    ],
)
def test_tls_files_that_do_not_fit_are_named_before_any_work(tmp_path, key, file, match):
    """A host whose client key is not its client certificate's failed every handshake and blamed the
    guest's server certificate; every [tls] file is now checked at start, under its own key."""
    files = _write(tmp_path, SPLITNN, timeout_s=5, protocol="splitnn")
    text = files["host"].read_text()
    start = text.index(f"\n{key} = ") + 1
    end = text.index("\n", start)
    files["host"].write_text(text[:start] + f'{key} = "{file}"' + text[end:])
    with pytest.raises(ConfigError, match=match):
        run_party(load_party_config(files["host"]))
