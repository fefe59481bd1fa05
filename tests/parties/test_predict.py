"""Scoring new rows with a saved vertical model (``hamrah party --predict``): each protocol's halves,
saved as ``hamrah party`` saves them and loaded back, give the trained model's probabilities on the rows
every party holds, whatever order and extra rows each party's file has; a model of another protocol,
other settings or other columns is refused with the reason."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hamrah.core.errors import ConfigError, DataError
from hamrah.data.vertical import PartyTable, load_vertical
from hamrah.parties.runner import _scores, _write_result
from hamrah.vertical import run_parties
from hamrah.vertical.lr_common import standardise
from hamrah.vertical.predict import score
from hamrah.vertical.registry import build_config, resolve
from hamrah.vertical.secureboost_model import walk

ME = SimpleNamespace(name="guest")  # the channel of a party refused before any message
BREAST = load_vertical("breast")
IDS = BREAST["guest"].ids
TRAIN = {name: table.select(IDS[:200]) for name, table in BREAST.items()}
SETTINGS = {
    "coordinated_lr": {"epochs": 2, "batch_size": 64, "encrypted": False},
    "sshe_lr": {"epochs": 2, "batch_size": 64, "encrypted": False, "transform": "quantile", "clip": 3.0},
    "secureboost": {"num_trees": 2, "max_depth": 2, "encrypted": False},
    "splitnn": {"epochs": 1, "bottom_hidden": (4,), "cut_dim": 2, "top_hidden": (2,)},
}


def _rows() -> dict[str, PartyTable]:
    """The guest holds rows 150-299 shuffled, with labels; the host rows 100-349: 150 rows shared."""
    order = np.random.default_rng(0).permutation(IDS[150:300])
    return {"guest": BREAST["guest"].select(order), "host": BREAST["host"].select(IDS[100:350])}


def _train(protocol: str, tmp_path) -> tuple[object, dict, dict]:
    spec, cfg = resolve(protocol), build_config(protocol, SETTINGS[protocol])
    roles = {n: (lambda ch, n=n: spec.roles[n](ch, TRAIN[n], cfg)) for n in ("guest", "host")}
    if "arbiter" in spec.roles:
        roles["arbiter"] = lambda ch: spec.roles["arbiter"](ch, None, cfg)
    res, stats = run_parties(roles, timeout_s=120)
    arrays = {}
    for name in ("guest", "host"):
        party = SimpleNamespace(out=tmp_path / name, name=name, role=name, protocol=protocol, settings=cfg)
        _write_result(party, res[name], stats[name], TRAIN[name])
        with np.load(tmp_path / name / "model.npz", allow_pickle=False) as z:
            arrays[name] = {k: z[k] for k in z.files}
    return cfg, res, arrays


def _score(protocol, cfg, arrays, rows, parties=("guest", "host")) -> dict:
    out, _ = run_parties(
        {n: (lambda ch, n=n: score(ch, rows[n], protocol, cfg, arrays[n], "guest", parties)) for n in parties},
        timeout_s=60,
    )
    return out


def _expected(protocol: str, cfg, res: dict, ids: np.ndarray) -> np.ndarray:
    """The trained in-memory model's probabilities for ``ids``, computed here in one place."""
    g, h = BREAST["guest"].select(ids), BREAST["host"].select(ids)
    if protocol.endswith("_lr"):
        zg = standardise(g.features, res["guest"], True, cfg.clip, cfg.transform)[0]
        zh = standardise(h.features, res["host"], False, cfg.clip, cfg.transform)[0]
        return 1 / (1 + np.exp(-(zg @ res["guest"].weights + zh @ res["host"].weights)))
    if protocol == "secureboost":
        bits = [res["host"].decisions(h.features)]
        margin = res["guest"].base_score + sum(walk(t, g.features, bits) for t in res["guest"].trees)
        return 1 / (1 + np.exp(-margin))
    model = res["guest"].model
    with torch.no_grad():
        cut = torch.cat(
            [
                model.bottom.network(model.bottom.standardizer(g.features)),
                res["host"].network(res["host"].standardizer(h.features)),
            ],
            1,
        )
        return torch.sigmoid(model.top(cut)).squeeze(1).numpy().astype(np.float64)


@pytest.mark.parametrize("protocol", sorted(SETTINGS))
def test_a_saved_model_scores_the_rows_every_party_holds_as_the_trained_model_does(protocol, tmp_path):
    cfg, res, arrays = _train(protocol, tmp_path)
    out = _score(protocol, cfg, arrays, _rows())
    ids, probs = out["guest"]
    np.testing.assert_array_equal(ids, np.sort(IDS[150:300]))
    np.testing.assert_array_equal(out["host"][0], ids)
    assert out["host"][1] is None  # only the guest learns the probabilities
    np.testing.assert_allclose(probs, _expected(protocol, cfg, res, ids), rtol=0, atol=1e-6)
    assert np.all((probs > 0) & (probs < 1))


@pytest.fixture(scope="module")
def sshe(tmp_path_factory):
    return _train("sshe_lr", tmp_path_factory.mktemp("sshe"))


def test_a_model_is_refused_under_other_settings_or_another_protocol(sshe):
    cfg, _, arrays = sshe
    rows = _rows()
    with pytest.raises(ConfigError, match=r"trained with clip = 3.0 \(config: 0.0\)"):
        score(
            ME,
            rows["guest"],
            "sshe_lr",
            build_config("sshe_lr", {**SETTINGS["sshe_lr"], "clip": 0.0}),
            arrays["guest"],
            "guest",
            (),
        )
    with pytest.raises(ConfigError, match="trained by protocol 'sshe_lr', this config says 'coordinated_lr'"):
        score(ME, rows["guest"], "coordinated_lr", cfg, arrays["guest"], "guest", ())
    with pytest.raises(ConfigError, match="protocol 'psi': no prediction"):
        score(ME, rows["guest"], "psi", cfg, arrays["guest"], "guest", ())


def test_rows_with_other_columns_and_no_shared_ids_are_refused(sshe):
    cfg, _, arrays = sshe
    host = _rows()["host"]
    swapped = PartyTable(host.ids, host.features[:, ::-1], host.feature_names[::-1], None)
    with pytest.raises(DataError, match="differ from the model's"):
        score(SimpleNamespace(name="host"), swapped, "sshe_lr", cfg, arrays["host"], "guest", ())
    rows = {"guest": BREAST["guest"].select(IDS[:10]), "host": BREAST["host"].select(IDS[10:20])}
    with pytest.raises(DataError, match="prediction: the parties share no ids"):
        _score("sshe_lr", cfg, arrays, rows)


def test_a_file_that_is_not_the_protocols_model_is_named():
    cfg = build_config("secureboost", SETTINGS["secureboost"])
    with pytest.raises(DataError, match="no array 'base_score', so not a SecureBoost guest model"):
        score(ME, _rows()["guest"], "secureboost", cfg, {"weights": np.zeros(3)}, "guest", ())


def test_the_arbiter_and_a_model_without_rows_are_refused_at_the_command_line(tmp_path, capsys):
    from hamrah.cli import main
    from hamrah.parties.runner import predict_party

    with pytest.raises(ConfigError, match="the arbiter takes no part in prediction"):
        predict_party(SimpleNamespace(name="arbiter", role="arbiter"), tmp_path / "rows.csv")
    config = tmp_path / "party.toml"
    config.write_text(
        '[party]\nname = "guest"\nrole = "guest"\nlisten = "127.0.0.1:1"\nout = "out"\n[protocol]\nname = "psi"\n'
    )
    assert main(["party", "--config", str(config), "--model", "m.npz"]) == 2
    assert "--model goes with --predict" in capsys.readouterr().err


def test_parties_with_text_ids_join_on_them_and_write_them_back(tmp_path):
    """Account numbers as ids: each party reads them as text (``id_type = "str"``), PSI joins their
    digests, and the intersection comes back as the text each party wrote."""
    from hamrah.data.vertical import read_party_csv

    for name, accounts in (("guest", ["acct-07", "acct-01", "zoë", "acct-99"]), ("host", ["zoë", "acct-01", "x"])):
        (tmp_path / f"{name}.csv").write_text("id,x0\n" + "".join(f"{a},{i}\n" for i, a in enumerate(accounts)))
    tables = {n: read_party_csv(tmp_path / f"{n}.csv", id_type="str") for n in ("guest", "host")}
    spec, cfg = resolve("psi"), build_config("psi", {})
    res, stats = run_parties({n: (lambda ch, n=n: spec.roles[n](ch, tables[n], cfg)) for n in tables}, timeout_s=60)
    for name in tables:
        party = SimpleNamespace(out=tmp_path / name, name=name, role=name, protocol="psi", settings=cfg)
        _write_result(party, res[name], stats[name], tables[name])
        lines = (tmp_path / name / "intersection.csv").read_text().splitlines()
        assert lines[0] == "id" and sorted(lines[1:]) == ["acct-01", "zoë"]


@pytest.mark.parametrize("mode", ["plain", "paillier"])
def test_ftl_the_host_scores_rows_of_its_own_as_at_the_end_of_training(mode, tmp_path):
    """FTL: the saved host network and the guest's saved Phi score the host's rows outside the overlap
    to the scores training gave them; the guest runs with no rows and learns nothing."""
    cfg = build_config("ftl", {"epochs": 1, "hidden": (4,), "dim": 2, "mode": mode, "key_bits": 1024})
    spec = resolve("ftl")
    tables = {"guest": BREAST["guest"].select(IDS[100:200]), "host": BREAST["host"].select(IDS[:150])}
    res, stats = run_parties({n: (lambda ch, n=n: spec.roles[n](ch, tables[n], cfg)) for n in tables}, timeout_s=120)
    arrays = {}
    for name in tables:
        party = SimpleNamespace(out=tmp_path / name, name=name, role=name, protocol="ftl", settings=cfg)
        _write_result(party, res[name], stats[name], tables[name])
        with np.load(tmp_path / name / "model.npz", allow_pickle=False) as z:
            arrays[name] = {k: z[k] for k in z.files}
    host_only = BREAST["host"].select(np.sort(IDS[:100]))  # the rows training scored (outside the overlap)
    rows = {"guest": None, "host": host_only}
    out, _ = run_parties(
        {n: (lambda ch, n=n: score(ch, rows[n], "ftl", cfg, arrays[n], "guest", ("guest", "host"))) for n in rows},
        timeout_s=120,
    )
    np.testing.assert_array_equal(out["host"][0], host_only.ids)
    assert len(out["guest"][0]) == 0 and out["guest"][1] is None  # the guest learns no score
    np.testing.assert_allclose(out["host"][1], res["host"].scores, atol=1e-5 if mode == "paillier" else 1e-12)
    with pytest.raises(ConfigError, match="no rows to score; expected this party.s columns of them"):
        score(SimpleNamespace(name="host"), None, "ftl", cfg, arrays["host"], "guest", ("guest", "host"))


def _party_run(tmp_path, objective: str, y: np.ndarray) -> tuple[dict, list[list[str]], np.ndarray]:
    """Train SecureBoost with guest labels ``y`` and score the same rows through the party runner over
    gRPC + TLS; return the guest's summary, its predictions.csv rows and their true labels."""
    from tests.parties.test_parties import _threads, _write

    from hamrah.parties import load_party_config
    from hamrah.parties.runner import predict_party, run_party

    g = TRAIN["guest"]
    tables = {"guest": PartyTable(g.ids, g.features, g.feature_names, y), "host": TRAIN["host"]}
    settings = {"num_trees": 3, "max_depth": 2, "encrypted": False, "objective": objective}
    files = _write(tmp_path, settings, protocol="secureboost", tables=tables)
    _threads({n: lambda n=n: run_party(load_party_config(files[n])) for n in files})
    done = _threads({n: lambda n=n: predict_party(load_party_config(files[n]), tmp_path / f"{n}.csv") for n in files})
    rows = [line.split(",") for line in (tmp_path / "out" / "guest" / "predictions.csv").read_text().splitlines()]
    return done["guest"], rows, tables["guest"].select(np.array([int(r[0]) for r in rows[1:]])).labels


def test_a_secureboost_regression_model_predicts_values_and_reports_its_rmse(tmp_path):
    """The guest's file has labels, so the summary holds the RMSE of the predictions (in the labels' unit)."""
    g = TRAIN["guest"]
    summary, rows, truth = _party_run(
        tmp_path, "reg:squarederror", 100 + 20 * (g.features[:, 0] - g.features[:, 0].mean()) / g.features[:, 0].std()
    )
    assert rows[0] == ["id", "prediction"] and len(rows) == 201
    predicted = np.array([float(r[1]) for r in rows[1:]])
    assert summary["rmse"] == pytest.approx(float(np.sqrt(np.mean((predicted - truth) ** 2))), rel=1e-6)
    assert summary["rmse"] < truth.std() and "auc" not in summary


def test_a_secureboost_multiclass_model_writes_each_class_probability(tmp_path):
    g = TRAIN["guest"]
    y = np.searchsorted(np.quantile(g.features[:, 0], [0.3, 0.7]), g.features[:, 0]).astype(np.float64)
    summary, rows, truth = _party_run(tmp_path, "multi:softprob", y)
    assert rows[0] == ["id", "class", "p_0", "p_1", "p_2"] and len(rows) == 201
    probs = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert [int(r[1]) for r in rows[1:]] == probs.argmax(axis=1).tolist()
    assert (
        summary["accuracy"] == pytest.approx(float(np.mean(probs.argmax(axis=1) == truth)))
        and summary["accuracy"] > 0.8
    )


def test_scores_skip_blank_labels_and_refuse_labels_the_model_cannot_have():
    p = np.array([0.9, 0.2, 0.7, 0.4])
    got = _scores(np.array([1.0, 0.0, np.nan, 1.0]), p, False, "probability", "rows.csv: y")
    assert got["labelled"] == 3 and got["accuracy"] == pytest.approx(2 / 3) and got["auc"] == 1.0
    with pytest.raises(DataError, match=r"rows.csv: y: labels \[3.0\] do not fit the model; expected 0..1"):
        _scores(np.array([1.0, 3.0, 0.0, 1.0]), p, False, "probability", "rows.csv: y")
    assert _scores(None, p, False, "probability", "x") == {} and _scores(np.full(4, np.nan), p, False, "", "x") == {}
    assert _scores(np.array([1.0, 0.0, 1.0, 0.0]), p, True, "prediction", "x")["rmse"] > 0
