"""hamrah.vertical.train / Trained.predict: any protocol in one process, scored the way ``hamrah party
--predict`` scores (the same saved arrays, the same messages), equal to each protocol's own scores."""

from __future__ import annotations

import numpy as np
import pytest

from hamrah.core.errors import ConfigError
from hamrah.data.vertical import load_vertical
from hamrah.vertical import Trained, train
from hamrah.vertical import splitnn as sn
from hamrah.vertical.lr_common import standardise
from hamrah.vertical.secureboost_core import SecureBoostConfig
from hamrah.vertical.secureboost_local import fit_local, predict_local


@pytest.fixture(scope="module")
def breast():
    t = load_vertical("breast")
    ids = t["guest"].ids[:200]
    return {k: v.select(ids) for k, v in t.items()}


def _shuffled(tables, seed=0):
    """Each party's rows in another order, the host missing some: what prediction must align."""
    rng = np.random.default_rng(seed)
    return {k: v.select(rng.permutation(v.ids)[: len(v.ids) - 10 * (k != "guest")]) for k, v in tables.items()}


def test_vertical_lr_scores_are_the_models_probabilities(breast):
    model = train("sshe_lr", breast, {"epochs": 2, "key_bits": 1024})
    assert isinstance(model, Trained) and model.roles == {"guest": "guest", "host": "host"}
    rows = _shuffled(breast)
    ids, p = model.predict(rows)
    g, h = breast["guest"].select(ids), breast["host"].select(ids)
    wg, wh = model.results["guest"], model.results["host"]
    zg = standardise(g.features, wg, True, model.settings.clip, model.settings.transform)[0]
    zh = standardise(h.features, wh, False, model.settings.clip, model.settings.transform)[0]
    assert np.array_equal(ids, np.sort(rows["host"].ids))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(zg @ wg.weights + zh @ wh.weights))), rtol=1e-9)


def test_an_arbiter_joins_by_its_config_name(breast):
    model = train("coordinated_lr", breast, {"epochs": 1, "encrypted": False, "arbiter": "auditor"})
    assert model.roles == {"guest": "guest", "host": "host", "auditor": "arbiter"}
    assert len(model.predict(breast)[1]) == 200
    with pytest.raises(ConfigError, match="'auditor' holds no model"):
        model.arrays("auditor")


def test_secureboost_scores_equal_its_own_prediction(breast):
    settings = {"num_trees": 3, "max_depth": 2, "encrypted": False}
    lines: list[str] = []
    ids, p = train("secureboost", breast, settings, progress=lines.append).predict(_shuffled(breast))
    trees = [f"{party}: tree {t} done" for party in ("guest", "host") for t in (1, 2, 3)]
    psi = [f"{p}: psi: own ids: 200 of 200 ids blinded (list done)" for p in ("guest", "host")]
    psi += ["guest: psi: the ids of 'host': 200 ids blinded (list done)"]
    psi += ["host: psi: the ids of 'guest': 200 ids blinded (list done)"]
    assert sorted(lines) == sorted(trees + psi)
    fit = fit_local(breast, SecureBoostConfig(**settings))
    aligned = {k: v.select(ids) for k, v in breast.items()}
    np.testing.assert_array_equal(p, predict_local(fit, aligned))


def test_splitnn_scores_equal_the_training_runs_scores(breast):
    settings = {"epochs": 2, "bottom_hidden": (4,), "cut_dim": 2, "top_hidden": (2,)}
    model = train("splitnn", breast, settings)
    ids, p = model.predict(breast)
    # PSI leaves the parties the shared ids in sorted order: the central model trains on that order
    direct = sn.train_central(breast, sn.SplitNNConfig(**settings), train_ids=ids, eval_ids=ids)
    np.testing.assert_allclose(p, direct.scores, atol=1e-5)
    assert model.arrays("host")["protocol"] == "splitnn"
    assert tuple(model.arrays("guest")["feature_names"]) == breast["guest"].feature_names


def test_ftl_scores_the_hosts_own_rows(breast):
    g, h = breast["guest"], breast["host"]
    tables = {"guest": g.select(g.ids[60:]), "host": h.select(h.ids[:120])}  # 60 shared ids
    model = train("ftl", tables, {"epochs": 2, "hidden": (4,), "dim": 2})
    others = tables["host"].select(tables["host"].ids[:60])  # the host's rows the guest lacks
    ids, scores = model.predict({"host": others})
    np.testing.assert_array_equal(ids, others.ids)
    # training scored the same rows, in sorted id order
    np.testing.assert_allclose(scores[np.argsort(ids)], model.results["host"].scores, atol=1e-6)


def test_mistakes_are_named(breast):
    with pytest.raises(ConfigError, match="no table for the guest 'guest'"):
        train("sshe_lr", {"bank": breast["guest"], "host": breast["host"]})
    with pytest.raises(ConfigError, match="protocol 'sshe'.*did you mean 'sshe_lr'"):
        train("sshe", breast)
    psi = train("psi", breast)
    assert psi.results["guest"].tolist() == sorted(breast["guest"].ids.tolist())
    with pytest.raises(ConfigError, match="'guest' holds no model of 'psi'"):
        psi.predict(breast)
    model = train("secureboost", breast, {"num_trees": 1, "encrypted": False})
    with pytest.raises(ConfigError, match=r"tables of \['bank'\]"):
        model.predict({**breast, "bank": breast["host"]})


def test_saved_halves_are_the_files_hamrah_party_scores_with(breast, tmp_path):
    from hamrah.vertical import run_parties
    from hamrah.vertical.predict import score

    model = train("secureboost", breast, {"num_trees": 2, "max_depth": 2, "encrypted": False})
    paths = model.save(tmp_path)
    assert paths == {p: tmp_path / p / "model.npz" for p in ("guest", "host")}
    loaded = {}
    for party, path in paths.items():
        with np.load(path, allow_pickle=False) as z:
            loaded[party] = {k: z[k] for k in z.files}
    roles = {
        p: (lambda ch, p=p: score(ch, breast[p], "secureboost", model.settings, loaded[p], "guest", tuple(paths)))
        for p in paths
    }
    results, _ = run_parties(roles, timeout_s=60)
    np.testing.assert_array_equal(results["guest"][1], model.predict(breast)[1])


def test_wrong_arguments_to_train_and_save_are_one_line(breast, tmp_path):
    with pytest.raises(ConfigError, match="protocol None: expected one of"):
        train(None, breast)
    with pytest.raises(ConfigError, match="tables: expected a mapping of party name -> PartyTable"):
        train("sshe_lr", [breast["guest"], breast["host"]])
    with pytest.raises(ConfigError, match="tables: expected a mapping"):
        train("sshe_lr", {"guest": breast["guest"], "host": "host.csv"})
    renamed = {"guest": breast["guest"], "bank": breast["host"]}
    with pytest.raises(ConfigError, match=r"tables of hosts \['bank'\], but settings name hosts \['host'\]"):
        train("coordinated_lr", renamed, {"encrypted": False, "epochs": 1})
    with pytest.raises(ConfigError, match=r"hosts \['host', 'host2'\]"):  # sshe_lr takes one host
        train("sshe_lr", {**breast, "host2": breast["host"]}, {"encrypted": False, "epochs": 1})
    model = train("sshe_lr", breast, {"encrypted": False, "epochs": 1})
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="save: folder .*afile: is a file"):
        model.save(tmp_path / "afile")
