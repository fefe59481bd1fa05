"""Real parties: guest and host, each through ``run_party`` over loopback gRPC with mutual TLS, give
the model run_parties gives (in threads of this process: the same runner, channel and TLS as
``hamrah party``), and so do a guest, two hosts and an arbiter; as separate processes, a host that is
killed mid-training is reported, restarted, and training resumes from the last completed epoch to the
same model. Every protocol's model is saved."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hamrah.core.errors import ConfigError, PartyFailed
from hamrah.data.vertical import PartyTable, load_vertical
from hamrah.parties import PartyServer, load_party_config, make_party_tls
from hamrah.parties.runner import _write_result, predict_party, run_party
from hamrah.vertical import lr_coordinated, lr_sshe, run_parties
from hamrah.vertical.lr_common import LRConfig, standardise
from hamrah.vertical.registry import build_config, resolve
from hamrah.vertical.saved import model_arrays

SETTINGS = {"epochs": 3, "batch_size": 64, "lr": 0.3, "l2": 0.01, "tol": 0.0, "key_bits": 1024}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROWS = 200  # the first 200 breast rows keep the processes quick


def _subset() -> dict:
    d = load_vertical("breast")
    ids = d["guest"].ids[:ROWS]
    return {name: table.select(ids) for name, table in d.items()}


def _write_csv(path: Path, table) -> None:
    cols = [table.ids[:, None].astype(np.float64), table.features]
    names = ["id", *table.feature_names]
    if table.labels is not None:
        cols.insert(1, table.labels[:, None])
        names.insert(1, "y")
    np.savetxt(path, np.hstack(cols), delimiter=",", header=",".join(names), comments="", fmt="%.17g")


def _toml(value) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else f'"{value}"' if isinstance(value, str) else str(value)


def _write(
    tmp: Path,
    settings: dict,
    timeout_s: float = 60,
    protocol: str = "sshe_lr",
    tables: dict | None = None,
    roles: dict | None = None,
) -> dict[str, Path]:
    """Write TLS files, each party's CSV (``tables``, default the breast subset) and TOML; return the
    TOMLs. ``roles``: party name -> role (default guest and host); a party without a table has no data."""
    roles = roles or {"guest": "guest", "host": "host"}
    tables = tables or _subset()
    make_party_tls(tmp / "tls", list(roles))
    for name, table in tables.items():
        _write_csv(tmp / f"{name}.csv", table)
    ports = {name: _port() for name in roles}
    proto = "\n".join(f"{k} = {_toml(v)}" for k, v in settings.items())
    files = {}
    for name, role in roles.items():
        label = 'label_column = "y"\n' if role == "guest" else ""
        data = f'[data]\npath = "{name}.csv"\n{label}' if name in tables else ""
        peers = "\n".join(f'{other} = "127.0.0.1:{ports[other]}"' for other in roles if other != name)
        files[name] = tmp / f"{name}.toml"
        files[name].write_text(f"""[party]
name = "{name}"
role = "{role}"
listen = "127.0.0.1:{ports[name]}"
out = "out/{name}"
timeout_s = {timeout_s}
retries = 2

{data}
[peers]
{peers}

[tls]
ca = "tls/ca.pem"
cert = "tls/{name}-server.pem"
key = "tls/{name}-server.key"
client_cert = "tls/{name}-client.pem"
client_key = "tls/{name}-client.key"

[protocol]
name = "{protocol}"
{proto}
""")
    return files


def _start(config: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "hamrah.cli", "party", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _in_process(settings: dict) -> dict:
    d = _subset()
    cfg = LRConfig(**settings)
    res, _ = run_parties(
        {"guest": lambda ch: lr_sshe.guest(ch, d["guest"], cfg), "host": lambda ch: lr_sshe.host(ch, d["host"], cfg)},
        timeout_s=120,
    )
    return res


def _model(tmp: Path, name: str) -> np.ndarray:
    with np.load(tmp / "out" / name / "model.npz") as z:
        return z["weights"].copy()


def _threads(calls: dict) -> dict:
    """Run each party's call in its own thread; return their results, or raise the first error."""
    done, errors = {}, []

    def party(name):
        try:
            done[name] = calls[name]()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=party, args=(n,)) for n in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors and set(done) == set(calls), errors
    return done


def test_run_party_over_grpc_tls_gives_the_in_process_model_and_scores_new_rows(tmp_path):
    # OU and the rank-Gauss transform here (the process-level test below runs Paillier, standardised)
    settings = {**SETTINGS, "scheme": "ou", "transform": "quantile"}
    files = _write(tmp_path, settings)
    done = _threads({n: lambda n=n: run_party(load_party_config(files[n])) for n in files})
    assert done["guest"]["epochs"] == settings["epochs"] and done["host"]["sent_bytes"]
    expected = _in_process(settings)
    for name in ("guest", "host"):
        np.testing.assert_allclose(_model(tmp_path, name), expected[name].weights, rtol=0, atol=1e-12)
        with np.load(tmp_path / "out" / name / "model.npz") as z:
            np.testing.assert_array_equal(z["quantiles"], expected[name].quantiles)

    # then score new rows with the saved halves, each party from its own file: 150 ids shared
    d, ids = load_vertical("breast"), load_vertical("breast")["guest"].ids
    _write_csv(tmp_path / "guest_new.csv", d["guest"].select(ids[150:300][::-1]))
    _write_csv(tmp_path / "host_new.csv", d["host"].select(ids[100:350]))
    scored = _threads(
        {n: lambda n=n: predict_party(load_party_config(files[n]), tmp_path / f"{n}_new.csv") for n in files}
    )
    assert scored["guest"]["scored"] == scored["host"]["scored"] == 150 and 0.9 < scored["guest"]["auc"] <= 1
    table = np.loadtxt(tmp_path / "out" / "guest" / "predictions.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(table[:, 0], np.sort(ids[150:300]))
    g, h = d["guest"].select(table[:, 0].astype(np.int64)), d["host"].select(table[:, 0].astype(np.int64))
    cfg = LRConfig(**settings)
    zg = standardise(g.features, expected["guest"], True, cfg.clip, cfg.transform)[0]
    zh = standardise(h.features, expected["host"], False, cfg.clip, cfg.transform)[0]
    np.testing.assert_allclose(
        table[:, 1], 1 / (1 + np.exp(-(zg @ expected["guest"].weights + zh @ expected["host"].weights))), rtol=1e-8
    )
    assert not (tmp_path / "out" / "host" / "predictions.csv").exists()  # the host learns no score


def test_an_arbiter_and_two_hosts_over_grpc_tls_give_the_in_process_model(tmp_path):
    """CoordinatedLR between four parties, each through run_party with its own file and certificate."""
    d = _subset()
    h = d["host"]
    tables = {
        "guest": d["guest"],
        "bank": PartyTable(h.ids, h.features[:, :10], h.feature_names[:10]),
        "telco": PartyTable(h.ids[::-1], h.features[::-1, 10:], h.feature_names[10:]),  # in another order
    }
    settings = {**SETTINGS, "hosts": ("bank", "telco")}
    roles = {"guest": "guest", "bank": "host", "telco": "host", "arbiter": "arbiter"}
    files = _write(tmp_path, settings, protocol="coordinated_lr", tables=tables, roles=roles)
    done = _threads({n: lambda n=n: run_party(load_party_config(files[n])) for n in files})
    assert {n: s["epochs"] for n, s in done.items()} == dict.fromkeys(files, SETTINGS["epochs"])
    cfg = LRConfig(**settings)
    parties = {
        "guest": lambda ch: lr_coordinated.guest(ch, tables["guest"], cfg),
        "arbiter": lambda ch: lr_coordinated.arbiter(ch, None, cfg),
        **{n: (lambda ch, n=n: lr_coordinated.host(ch, tables[n], cfg)) for n in ("bank", "telco")},
    }
    expected, _ = run_parties(parties, timeout_s=120)
    for name in ("guest", "bank", "telco"):
        np.testing.assert_allclose(_model(tmp_path, name), expected[name].weights, rtol=0, atol=1e-12)
    assert (tmp_path / "out" / "arbiter" / "summary.json").exists()


TINY = {
    "splitnn": {"epochs": 1, "bottom_hidden": (4,), "cut_dim": 2, "top_hidden": (2,)},
    "secureboost": {"num_trees": 1, "max_depth": 2, "key_bits": 1024},
    "ftl": {"epochs": 1, "hidden": (4,), "dim": 2, "mode": "plain"},
}


@pytest.mark.parametrize("protocol", sorted(TINY))
def test_every_protocols_model_is_saved(tmp_path, protocol):
    spec, cfg = resolve(protocol), build_config(protocol, TINY[protocol])
    d = _subset()
    if protocol == "ftl":  # a partial overlap: the host's other rows are the ones FTL scores
        d["host"] = d["host"].select(d["host"].ids[:150])
        d["guest"] = d["guest"].select(d["guest"].ids[100:])
    res, stats = run_parties(
        {n: (lambda ch, n=n: spec.roles[n](ch, d[n], cfg)) for n in ("guest", "host")}, timeout_s=120
    )
    for name in ("guest", "host"):
        out = tmp_path / name
        party = SimpleNamespace(out=out, name=name, role=name, protocol=protocol, settings=cfg)
        summary = _write_result(party, res[name], stats[name], d[name])
        assert summary["model"] == type(res[name]).__name__
        with np.load(out / "model.npz", allow_pickle=False) as z:
            saved = {k: z[k] for k in z.files}
        assert saved.keys() == model_arrays(res[name]).keys() | {"protocol", "settings", "feature_names"}
        for key, value in model_arrays(res[name]).items():
            np.testing.assert_array_equal(saved[key], value)
        assert str(saved["protocol"]) == protocol and tuple(saved["feature_names"]) == d[name].feature_names
    if protocol != "secureboost":  # a network's first weight matrix is among the saved arrays
        assert any(k.endswith("0.weight") for k in saved)


def test_a_host_killed_mid_training_is_reported_and_training_resumes(tmp_path):
    settings = {**SETTINGS, "batch_size": 32, "epochs": 6}
    files = _write(tmp_path, settings, timeout_s=60)
    guest, host = _start(files["guest"]), _start(files["host"])
    second = tmp_path / "out" / "host" / "checkpoints" / "epoch-0001.npz"
    deadline = time.monotonic() + 180
    while not second.exists() and host.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert second.exists() and host.poll() is None, "the host should still be training after epoch 1"
    host.kill()
    host.wait()
    host = _start(files["host"])
    g_out, h_out = guest.communicate(timeout=240)[0], host.communicate(timeout=240)[0]
    assert guest.returncode == 0 and host.returncode == 0, (g_out, h_out)
    assert "party 'host'" in g_out and "resuming" in g_out
    assert "resuming after epoch" in h_out
    expected = _in_process(settings)
    for name in ("guest", "host"):
        np.testing.assert_allclose(_model(tmp_path, name), expected[name].weights, rtol=0, atol=1e-12)


def test_a_stranger_certificate_is_refused(tmp_path):
    tls = make_party_tls(tmp_path / "tls", ["guest", "host", "mallory"])
    p1, p2 = _port(), _port()
    guest = PartyServer("guest", {"host": f"127.0.0.1:{p2}"}, f"127.0.0.1:{p1}", tls["guest"], timeout_s=2)
    mallory = PartyServer("mallory", {"guest": f"127.0.0.1:{p1}"}, f"127.0.0.1:{p2}", tls["mallory"], timeout_s=5)
    try:
        from hamrah.core.errors import ProtocolError

        with pytest.raises(ProtocolError, match="certificate 'mallory' is not a peer of 'guest'"):
            mallory.channel().send("guest", "psi/ring1", {"x": 1})
        with pytest.raises(PartyFailed, match="party 'host': sent nothing"):
            guest.channel().recv("host", "psi/ring1")
    finally:
        guest.stop()
        mallory.stop()


def test_a_second_party_on_a_taken_address_is_refused(tmp_path):
    """A party started twice (or two parties given one address) must not share the port: with
    SO_REUSEPORT the kernel would split the peers' connections between the two processes."""
    from hamrah.core.errors import TransportError

    tls = make_party_tls(tmp_path / "tls", ["guest", "host"])
    address = f"127.0.0.1:{_port()}"
    first = PartyServer("host", {"guest": f"127.0.0.1:{_port()}"}, address, tls["host"], timeout_s=2)
    try:
        with pytest.raises(TransportError, match=f"cannot listen on {address}.*another process"):
            PartyServer("host", {"guest": f"127.0.0.1:{_port()}"}, address, tls["host"], timeout_s=2)
    finally:
        first.stop()


def test_config_errors_name_the_key(tmp_path):
    files = _write(tmp_path, SETTINGS)
    text = files["guest"].read_text()
    files["guest"].write_text(text.replace("epochs = 3", "epocs = 3"))
    with pytest.raises(ConfigError, match="protocol.epocs.*did you mean 'epochs'"):
        load_party_config(files["guest"])
    files["guest"].write_text(text.replace('role = "guest"', 'role = "arbiter"'))
    with pytest.raises(ConfigError, match="party.role = 'arbiter'"):
        load_party_config(files["guest"])
    files["guest"].write_text(text.replace("retries = 2", "retries = 2\nworkers = 0"))
    with pytest.raises(ConfigError, match="party.workers = 0: expected an integer in 1..1024"):
        load_party_config(files["guest"])
    files["guest"].write_text(text.replace("retries = 2", "retries = 2\nworkers = 3"))
    assert load_party_config(files["guest"]).workers == 3
    port = text.split('listen = "127.0.0.1:')[1].split('"')[0]
    for bad in ("nonsense", "127.0.0.1:99999", "127.0.0.1:0"):
        files["guest"].write_text(text.replace(f'listen = "127.0.0.1:{port}"', f'listen = "{bad}"'))
        with pytest.raises(ConfigError, match=f"party.listen = '{bad}': expected"):
            load_party_config(files["guest"])
    files["guest"].write_text(text.replace('label_column = "y"\n', ""))
    with pytest.raises(ConfigError, match="data.label_column is required for the guest of sshe_lr"):
        load_party_config(files["guest"])


def test_the_shipped_vertical_configs_load():
    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("vertical_*.toml"))
    assert len(configs) >= 7
    for path in configs:
        cfg = load_party_config(path)
        assert cfg.name == cfg.role and cfg.name not in cfg.peers


def test_a_server_certificate_of_another_party_is_refused(tmp_path):
    """A party serving with another party's server certificate (same CA) cannot take that peer's
    traffic: a caller accepts only a certificate naming the peer it meant, and says so at once."""
    from hamrah.core.errors import TransportError
    from hamrah.parties.channel import TLSFiles

    tls = make_party_tls(tmp_path / "tls", ["guest", "host"])
    g, h = tls["guest"], tls["host"]
    impostor = TLSFiles(g.ca, h.cert, h.key, g.client_cert, g.client_key)  # the guest serving as 'host'
    p1, p2 = _port(), _port()
    guest = PartyServer("guest", {"host": f"127.0.0.1:{p2}"}, f"127.0.0.1:{p1}", impostor, timeout_s=60)
    host = PartyServer("host", {"guest": f"127.0.0.1:{p1}"}, f"127.0.0.1:{p2}", h, timeout_s=60)
    try:
        with pytest.raises(TransportError, match="TLS handshake with 'guest' at .* certificate naming 'guest'"):
            host.channel().send("guest", "lr/hello", {"x": 1})
        assert not guest.inbox.items["host"]
    finally:
        guest.stop()
        host.stop()


def test_a_party_stopping_on_its_own_error_stops_its_peer_at_once(tmp_path):
    """The host's data holds a NaN: it stops with the DataError, tells the guest the kind of error (no
    more), and the guest stops with PartyStopped instead of waiting for it to come back."""
    from hamrah.core.errors import DataError, PartyStopped

    d = _subset()
    features = d["host"].features.copy()
    features[5, 3] = np.nan
    tables = {"guest": d["guest"], "host": PartyTable(d["host"].ids, features, d["host"].feature_names)}
    files = _write(tmp_path, {**SETTINGS, "epochs": 1}, timeout_s=120, tables=tables)
    errors: dict = {}

    def party(name):
        try:
            run_party(load_party_config(files[name]))
        except Exception as e:
            errors[name] = e

    threads = [threading.Thread(target=party, args=(n,)) for n in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert isinstance(errors.get("host"), DataError), errors
    assert isinstance(errors.get("guest"), PartyStopped) and errors["guest"].error == "DataError"
    assert "nan" not in str(errors["guest"]).lower()


def test_make_tls_and_out_mistakes_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="expected at least one"):
        make_party_tls(tmp_path / "t0", [])
    make_party_tls(tmp_path / "tls1", ["guest", "host"])
    before = (tmp_path / "tls1" / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match="already holds a CA"):
        make_party_tls(tmp_path / "tls1", ["guest", "host", "arbiter"])
    assert (tmp_path / "tls1" / "ca.pem").read_bytes() == before
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="cannot make the folder"):
        make_party_tls(tmp_path / "afile" / "tls", ["guest"])
    files = _write(tmp_path, SETTINGS)
    files["guest"].write_text(files["guest"].read_text().replace('out = "out/guest"', 'out = "afile/out"'))
    with pytest.raises(ConfigError, match="party.out .*afile/out: lies under the file .*afile; expected a folder"):
        run_party(load_party_config(files["guest"]))


def test_a_pickled_model_file_and_a_garbage_frame_are_named(tmp_path):
    from hamrah.core.errors import DataError, ProtocolError
    from hamrah.parties.runner import _load_arrays

    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="it holds pickled objects, which are never loaded") as err:
        _load_arrays(tmp_path / "obj.npy")
    assert "allow_pickle" not in str(err.value)
    tls = make_party_tls(tmp_path / "tls", ["guest", "host"])
    p1, p2 = _port(), _port()
    guest = PartyServer("guest", {"host": f"127.0.0.1:{p2}"}, f"127.0.0.1:{p1}", tls["guest"], timeout_s=10)
    host = PartyServer("host", {"guest": f"127.0.0.1:{p1}"}, f"127.0.0.1:{p2}", tls["host"], timeout_s=10)
    try:
        channel = host.channel()
        channel._deliver("guest", "junk", channel.session + (0).to_bytes(8, "big") + b"not a message", 5)
        with pytest.raises(ProtocolError, match="from 'host': .*HVM1"):
            guest.channel().recv("host", "lr/hello")
    finally:
        guest.stop()
        host.stop()
