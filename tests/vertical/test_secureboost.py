"""SecureBoost: encrypted = plaintext = XGBoost on the same bins; central AUC; hostile parties refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from hamrah.core.errors import ConfigError, DataError, ProtocolError
from hamrah.data.vertical import PartyTable, load_vertical
from hamrah.vertical.binning import fit_bins
from hamrah.vertical.channel import run_parties
from hamrah.vertical.secureboost import guest
from hamrah.vertical.secureboost_core import SecureBoostConfig
from hamrah.vertical.secureboost_host import host
from hamrah.vertical.secureboost_local import fit_local, predict_local
from hamrah.vertical.secureboost_model import walk

KEY_BITS = 1024  # test-only key size, for speed; docs and benchmarks use 2048


@pytest.fixture(scope="module")
def breast():
    return load_vertical("breast")


def _rows(tables, idx):
    return {k: v.select(v.ids[idx]) for k, v in tables.items()}


def _split(tables, seed=0):
    n = len(tables["guest"].ids)
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(0.8 * n)
    return _rows(tables, np.sort(perm[:cut])), _rows(tables, np.sort(perm[cut:]))


def test_encrypted_and_plaintext_grow_the_same_trees(breast):
    config = SecureBoostConfig(num_trees=2, max_depth=3, key_bits=KEY_BITS, psi=False)  # bytes: trees only
    plain = fit_local(breast, dataclasses.replace(config, encrypted=False))
    enc = fit_local(breast, config, rng=np.random.default_rng(1))
    for a, b in zip(plain.guest.trees, enc.guest.trees):
        assert a.splits() == b.splits() or np.allclose(a.threshold, b.threshold, equal_nan=True)
        for name in ("owner", "feature", "left", "right", "value"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(plain.hosts["host"].thresholds, enc.hosts["host"].thresholds)
    assert any((t.owner == 1).any() for t in enc.guest.trees), "expected some host splits"
    np.testing.assert_array_equal(predict_local(plain, breast), predict_local(enc, breast))
    # the guest holds no host threshold; the encrypted run moved ciphertexts, not int64 gradients
    assert all(np.isnan(t.threshold[t.owner == 1]).all() for t in enc.guest.trees)
    assert enc.stats["host"].received_bytes["guest"] > 4 * plain.stats["host"].received_bytes["guest"]


def _xgb_on_bins(tables, config, objective="binary:logistic", weight=None, columns=None):
    bins = [fit_bins(tables[k].features, config.max_bins) for k in ("guest", "host")]
    x = np.hstack([b.transform(tables[k].features) for b, k in zip(bins, ("guest", "host"))]).astype(np.float64)
    x[np.isnan(np.hstack([tables[k].features for k in ("guest", "host")]))] = np.nan  # XGBoost's missing value
    x = x if columns is None else x[:, columns]
    y = tables["guest"].labels
    kind = xgb.XGBRegressor if objective == "reg:squarederror" else xgb.XGBClassifier
    multi = objective == "multi:softprob"  # one scalar first margin for every class, as ours (0 here; softmax
    # ignores a constant), else XGBoost 3 estimates one per class
    model = kind(
        objective=objective,
        n_estimators=config.num_trees,
        max_depth=config.max_depth,
        learning_rate=config.learning_rate,
        reg_lambda=config.reg_lambda,
        min_child_weight=config.min_child_weight,
        tree_method="hist",
        max_bin=256,
        base_score=0.5 if multi else float(y.mean()),
        n_jobs=1,
    ).fit(x, y, sample_weight=weight)
    if multi:
        return model.predict_proba(x)
    return model.predict(x) if objective == "reg:squarederror" else model.predict_proba(x)[:, 1]


@settings(max_examples=8, deadline=None)
@given(
    st.integers(1, 4),
    st.sampled_from([0.1, 0.3, 1.0]),
    st.sampled_from([0.0, 1.0, 5.0]),
    st.sampled_from([0.5, 1.0, 4.0]),
    st.sampled_from([4, 16, 32]),
)
def test_same_binning_gives_xgboosts_trees(breast, depth, lr, lam, mcw, max_bins):
    """SecureBoost is lossless: on the same bins it predicts what central XGBoost predicts."""
    config = SecureBoostConfig(
        num_trees=3,
        max_depth=depth,
        learning_rate=lr,
        reg_lambda=lam,
        min_child_weight=mcw,
        max_bins=max_bins,
        encrypted=False,
    )
    ours = predict_local(fit_local(breast, config), breast)
    np.testing.assert_allclose(ours, _xgb_on_bins(breast, config), atol=1e-5)


def _with_missing(tables, fraction, seed):
    """The tables with ``fraction`` of their feature values (chosen at random) replaced by NaN."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in tables.items():
        x = t.features.copy()
        x[rng.random(x.shape) < fraction] = np.nan
        out[name] = PartyTable(t.ids, x, t.feature_names, t.labels)
    return out


@settings(max_examples=6, deadline=None)
@given(
    st.integers(1, 3),
    st.sampled_from([0.0, 1.0]),
    st.sampled_from([0.5, 4.0]),
    st.sampled_from([4, 16]),
    st.sampled_from([0.05, 0.3]),
    st.integers(0, 3),
)
def test_missing_values_go_the_way_xgboost_learns(breast, depth, lam, mcw, max_bins, fraction, seed):
    """With NaN in both parties' features, each split learns where missing values go (XGBoost's
    default direction), and training and prediction match central XGBoost on the same bins."""
    tables = _with_missing(breast, fraction, seed)
    config = SecureBoostConfig(
        num_trees=3, max_depth=depth, reg_lambda=lam, min_child_weight=mcw, max_bins=max_bins, encrypted=False
    )
    fit = fit_local(tables, config)
    np.testing.assert_allclose(predict_local(fit, tables), _xgb_on_bins(tables, config), atol=1e-5)


def test_learned_missing_directions_hold_under_encryption_and_at_prediction(breast):
    tables = _with_missing(breast, 0.3, 0)
    plain = fit_local(tables, SecureBoostConfig(num_trees=2, max_depth=3, encrypted=False))
    enc = fit_local(
        tables, SecureBoostConfig(num_trees=2, max_depth=3, key_bits=KEY_BITS), rng=np.random.default_rng(2)
    )
    for a, b in zip(plain.guest.trees, enc.guest.trees):
        np.testing.assert_array_equal(a.missing_left, b.missing_left)
    np.testing.assert_array_equal(plain.hosts["host"].missing_left, enc.hosts["host"].missing_left)
    learned = np.concatenate(
        [t.missing_left[t.owner == 0] for t in plain.guest.trees] + [plain.hosts["host"].missing_left]
    )
    assert learned.any(), "some split should send the missing values left"
    # a row whose every feature is missing follows each split's learned direction
    blank = {
        n: PartyTable(t.ids[:1], np.full((1, t.features.shape[1]), np.nan), t.feature_names, t.labels)
        for n, t in tables.items()
    }
    bits = [plain.hosts["host"].decisions(blank["host"].features)]
    margin = plain.guest.base_score + sum(walk(t, blank["guest"].features, bits) for t in plain.guest.trees)
    np.testing.assert_allclose(predict_local(plain, blank), 1 / (1 + np.exp(-margin)))
    with pytest.raises(DataError, match="is inf"):
        fit_local(
            {
                **tables,
                "host": PartyTable(
                    tables["host"].ids, np.full_like(tables["host"].features, np.inf), tables["host"].feature_names
                ),
            },
            SecureBoostConfig(num_trees=1, encrypted=False),
        )


def _labelled(tables, objective: str, missing: float = 0.0):
    """The tables with other guest labels, from a noisy mix of both parties' columns: a target of 40 +- 15
    (squared error) or its terciles 0, 1, 2 (softmax); ``missing`` of the feature cells then set to NaN."""
    g, h = tables["guest"], tables["host"]
    z = lambda x: (x - x.mean(0)) / x.std(0)
    score = z(g.features)[:, 0] - 0.6 * z(h.features)[:, 3] + 0.5 * np.random.default_rng(1).normal(size=len(g.ids))
    y = 40 + 10 * score
    if objective == "multi:softprob":
        y = np.searchsorted(np.quantile(score, [1 / 3, 2 / 3]), score).astype(np.float64)
    out = {"guest": PartyTable(g.ids, g.features, g.feature_names, y), "host": h}
    return _with_missing(out, missing, 6) if missing else out


@settings(max_examples=8, deadline=None)
@given(
    st.sampled_from(["reg:squarederror", "multi:softprob"]),
    st.integers(1, 3),
    st.sampled_from([0.0, 1.0, 5.0]),
    st.sampled_from([0.5, 4.0, 20.0]),
    st.sampled_from([4, 32]),
    st.sampled_from([0.0, 0.2]),
)
def test_regression_and_softmax_give_xgboosts_predictions_on_the_same_bins(
    breast, objective, depth, lam, mcw, max_bins, missing
):
    """Squared error (labels in their own unit, gradients scaled per tree into the packing's range) and
    softmax (one tree per class per round, XGBoost's gradients): XGBoost's predictions on the same bins."""
    tables = _labelled(breast, objective, missing)
    config = SecureBoostConfig(
        num_trees=3,
        max_depth=depth,
        reg_lambda=lam,
        min_child_weight=mcw,
        max_bins=max_bins,
        encrypted=False,
        objective=objective,
    )
    fit = fit_local(tables, config)
    ours = predict_local(fit, tables)
    if objective == "multi:softprob":
        assert ours.shape == (len(tables["guest"].ids), 3) and len(fit.guest.trees) == 9
    else:
        assert ours.std() > 1  # predictions in the labels' unit, not probabilities
    tolerance = 1e-3 if objective == "reg:squarederror" else 1e-5  # g's fixed point follows the labels' unit
    np.testing.assert_allclose(ours, _xgb_on_bins(tables, config, objective), atol=tolerance)


@pytest.mark.parametrize("objective", ["reg:squarederror", "multi:softprob"])
def test_regression_and_softmax_encrypted_give_the_plaintext_predictions(breast, objective):
    tables = _labelled(breast, objective)
    kw = {"num_trees": 2, "max_depth": 3, "objective": objective}
    plain = fit_local(tables, SecureBoostConfig(encrypted=False, **kw))
    enc = fit_local(tables, SecureBoostConfig(key_bits=KEY_BITS, **kw), rng=np.random.default_rng(5))
    np.testing.assert_array_equal(predict_local(plain, tables), predict_local(enc, tables))
    with pytest.raises(ConfigError, match="secureboost.objective: expected one of"):
        SecureBoostConfig(objective="multi:softmax")


def test_softmax_resumes_after_whole_rounds_and_refuses_bad_labels(breast, tmp_path):
    from hamrah.parties.runner import _save, load_checkpoints
    from hamrah.vertical.secureboost_model import BoostCheckpoint

    tables = _labelled(breast, "multi:softprob")
    kw = {"num_trees": 2, "max_depth": 2, "objective": "multi:softprob"}
    plain = fit_local(tables, SecureBoostConfig(encrypted=False, **kw))
    # checkpoints come after whole rounds (3 trees): the guest kept round 1, the host its first 4 trees
    config = SecureBoostConfig(encrypted=False, **kw)
    roles = lambda resume, keep: {
        "guest": lambda ch: guest(ch, tables["guest"], config, ("host",), None, resume.get("guest"), keep.get("guest")),
        "host": lambda ch: host(ch, tables["host"], resume=resume.get("host"), on_epoch=keep.get("host")),
    }
    limit = {"guest": 3, "host": 4}
    keep = {n: (lambda s, n=n: _save(tmp_path / n, s) if s.epoch <= limit[n] else None) for n in tables}
    run_parties(roles({}, keep), timeout_s=60)
    saved = {n: load_checkpoints(tmp_path / n, BoostCheckpoint) for n in tables}
    assert sorted(saved["guest"]) == [3] and sorted(saved["host"]) == [1, 2, 3, 4]
    again, _ = run_parties(roles(saved, {}), timeout_s=60)
    for a, b in zip(again["guest"].trees, plain.guest.trees, strict=True):
        np.testing.assert_array_equal(a.value, b.value)
    bad = dict(
        tables,
        guest=PartyTable(
            tables["guest"].ids, tables["guest"].features, tables["guest"].feature_names, tables["guest"].labels + 0.5
        ),
    )
    with pytest.raises(DataError, match="expected class labels 0..K-1"):
        fit_local(bad, config)


@settings(max_examples=6, deadline=None)
@given(st.sampled_from([0.3, 0.5, 0.8]), st.sampled_from([0.3, 0.6, 1.0]), st.integers(0, 2**16), st.integers(1, 3))
def test_a_subsampled_tree_is_xgboosts_on_the_drawn_rows_and_columns(breast, rows, cols, seed, depth):
    """subsample and colsample_bytree: one tree learns from the drawn rows only (XGBoost with weight 0 on
    the others) and splits on the drawn features only (XGBoost on those columns), on the same bins."""
    from hamrah.vertical.secureboost_core import tree_draws

    config = SecureBoostConfig(  # no PSI: the draws index the rows in the order XGBoost gets them
        num_trees=1, max_depth=depth, subsample=rows, colsample_bytree=cols, seed=seed, encrypted=False, psi=False
    )
    ours = predict_local(fit_local(breast, config), breast)
    drawn, (g_cols, h_cols) = tree_draws(config, 0, len(breast["guest"].ids), [10, 20])
    assert drawn.sum() == round(rows * len(drawn)) and g_cols.sum() == max(1, round(cols * 10))
    theirs = _xgb_on_bins(breast, config, weight=drawn.astype(np.float64), columns=np.concatenate([g_cols, h_cols]))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_subsampled_encrypted_grows_the_plaintext_trees_and_shares_are_checked(breast):
    kw = {"num_trees": 2, "max_depth": 3, "subsample": 0.6, "colsample_bytree": 0.5, "seed": 3}
    plain = fit_local(breast, SecureBoostConfig(encrypted=False, **kw))
    enc = fit_local(breast, SecureBoostConfig(key_bits=KEY_BITS, **kw), rng=np.random.default_rng(4))
    np.testing.assert_array_equal(predict_local(plain, breast), predict_local(enc, breast))
    assert [t.value.tolist() for t in plain.guest.trees] != [
        t.value.tolist() for t in fit_local(breast, SecureBoostConfig(encrypted=False, **{**kw, "seed": 4})).guest.trees
    ]  # the seed draws other rows and columns
    for key, value in (("subsample", 0.0), ("colsample_bytree", 1.5), ("seed", -1)):
        with pytest.raises(ConfigError, match=f"secureboost.{key}"):
            SecureBoostConfig(**{key: value})


def test_hosts_build_and_send_histograms_of_the_drawn_features_only(breast):
    tables = _rows(breast, np.arange(150))

    def host_bytes(cols: float) -> int:
        config = dataclasses.replace(ENC, colsample_bytree=cols, seed=5, psi=False)  # histogram bytes only
        _, stats = run_parties(
            {
                "guest": lambda ch: guest(ch, tables["guest"], config, ("host",), np.random.default_rng(3)),
                "host": lambda ch: host(ch, tables["host"], rng=np.random.default_rng(4)),
            },
            timeout_s=60,
        )
        return stats["host"].sent_bytes["guest"]

    # a quarter of the host's 20 features: about a quarter of its histogram ciphertexts
    assert host_bytes(0.25) < 0.5 * host_bytes(1.0)


def test_auc_within_0005_of_central_xgboost(breast):
    train, test = _split(breast)
    config = SecureBoostConfig(num_trees=10, max_depth=3, encrypted=False)
    auc = roc_auc_score(test["guest"].labels, predict_local(fit_local(train, config), test))
    x = lambda t: np.hstack([t["guest"].features, t["host"].features])
    central = xgb.XGBClassifier(
        n_estimators=10,
        max_depth=3,
        learning_rate=0.3,
        tree_method="hist",
        max_bin=32,
        base_score=float(train["guest"].labels.mean()),
        n_jobs=1,
    )
    central.fit(x(train), train["guest"].labels)
    central_auc = roc_auc_score(test["guest"].labels, central.predict_proba(x(test))[:, 1])
    assert auc >= central_auc - 0.005, (auc, central_auc)


def test_two_hosts_equal_one_host_with_their_features(breast):
    feats = breast["host"].features
    split = {
        "guest": breast["guest"],
        "h1": PartyTable(breast["host"].ids, feats[:, :12], breast["host"].feature_names[:12]),
        "h2": PartyTable(breast["host"].ids, feats[:, 12:], breast["host"].feature_names[12:]),
    }
    config = SecureBoostConfig(num_trees=3, max_depth=3, encrypted=False)
    two = fit_local(split, config)
    assert {o for t in two.guest.trees for o in t.owner.tolist()} >= {0, 1}
    np.testing.assert_array_equal(predict_local(two, split), predict_local(fit_local(breast, config), breast))


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"num_trees": 0}, "num_trees"),
        ({"max_depth": 17}, "max_depth"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"reg_lambda": -1}, "reg_lambda"),
        ({"max_bins": 1}, "max_bins"),
        ({"encrypted": 1}, "encrypted"),
        ({"key_bits": 1023}, "key_bits"),
        ({"precision_bits": 40}, "precision_bits"),
        ({"min_child_weight": float("nan")}, "min_child_weight"),
    ],
)
def test_bad_config_names_the_key(kw, key):
    with pytest.raises(ConfigError, match=f"secureboost.{key}"):
        SecureBoostConfig(**kw)


def test_mismatched_ids_and_bad_labels_are_data_errors(breast):
    config = SecureBoostConfig(num_trees=1, encrypted=False)
    shuffled = breast["host"].select(breast["host"].ids[::-1])
    with pytest.raises(DataError, match="ids differ"):
        fit_local({"guest": breast["guest"], "host": shuffled}, dataclasses.replace(config, psi=False))
    # with PSI (the default) each file may hold other ids in any order: the shared ids are trained on
    fewer = shuffled.select(shuffled.ids[7:])
    aligned = {k: t.select(np.sort(fewer.ids)) for k, t in breast.items()}
    np.testing.assert_array_equal(
        predict_local(fit_local({"guest": breast["guest"], "host": fewer}, config), aligned),
        predict_local(fit_local(aligned, dataclasses.replace(config, psi=False)), aligned),
    )
    with pytest.raises(DataError, match="secureboost: the parties share no ids"):
        fit_local(
            {
                "guest": breast["guest"],
                "host": PartyTable(shuffled.ids + 10**6, shuffled.features, shuffled.feature_names),
            },
            config,
        )
    with pytest.raises(ProtocolError, match="psi = True, but this host is set to False"):
        run_parties(
            {
                "guest": lambda ch: guest(ch, breast["guest"], config, ("host",)),
                "host": lambda ch: host(ch, breast["host"], dataclasses.replace(config, psi=False)),
            },
            timeout_s=20,
        )
    g = breast["guest"]
    bad = PartyTable(g.ids, g.features, g.feature_names, g.labels * 2)
    with pytest.raises(DataError, match="0/1 labels"):
        fit_local({"guest": bad, "host": breast["host"]}, config)


class _Tamper:
    """A channel that rewrites the first outgoing message with a given tag."""

    def __init__(self, channel, tag, rewrite):
        self.inner, self.tag, self.rewrite, self.done = channel, tag, rewrite, False
        self.name, self.peers, self.stats = channel.name, channel.peers, channel.stats

    def send(self, to, tag, message):
        if tag == self.tag and not self.done:
            self.done = True
            tag, message = self.rewrite(tag, dict(message))
        self.inner.send(to, tag, message)

    def recv(self, frm, tag):
        return self.inner.recv(frm, tag)


def _run(tables, config, who, tag, rewrite):
    roles = {
        "guest": lambda ch: guest(ch, tables["guest"], config, ("host",), np.random.default_rng(3)),
        "host": lambda ch: host(ch, tables["host"], rng=np.random.default_rng(4)),
    }
    inner = roles[who]
    roles[who] = lambda ch: inner(_Tamper(ch, tag, rewrite))
    return run_parties(roles, timeout_s=60)


ENC = SecureBoostConfig(num_trees=1, max_depth=2, key_bits=KEY_BITS)


@pytest.mark.parametrize(
    "who, tag, rewrite, match",
    [
        ("host", "sbt.hist", lambda t, m: (t, {**m, "ct": m["ct"][:-1]}), r"histograms: expected \d+ ciphertexts, got"),
        ("host", "sbt.hist", lambda t, m: (t, {**m, "key": b"\0" * 16}), "another public key"),
        ("guest", "sbt.tree", lambda t, m: (t, {**m, "ct": (1 << 3000,) + m["ct"][1:]}), "not a ciphertext"),
        ("host", "sbt.hist", lambda t, m: ("sbt.schema", {}), "expected a 'sbt.hist' message, got 'sbt.schema'"),
        ("host", "sbt.partition", lambda t, m: (t, {**m, "left": m["left"][:-1]}), "'left'"),
        ("guest", "sbt.tree", lambda t, m: (t, {**m, "features": m["features"] & False}), "'features' must be 20"),
        (
            "host",
            "sbt.partition",
            lambda t, m: (t, {**m, "records": np.full(max(1, len(m["records"])), -1)}),
            "'records'",
        ),
        (
            "guest",
            "sbt.split",
            lambda t, m: (
                t,
                {
                    "nodes": np.array([1]),
                    "feature": np.array([0]),
                    "bin": np.array([99]),
                    "missing_left": np.array([False]),
                },
            ),
            "not a split candidate",
        ),
    ],
)
def test_hostile_messages_stop_with_a_clear_error(breast, who, tag, rewrite, match):
    with pytest.raises(ProtocolError, match=match):
        _run(_rows(breast, np.arange(150)), ENC, who, tag, rewrite)


def test_prediction_refuses_other_ids(breast):
    fit = fit_local(breast, SecureBoostConfig(num_trees=1, encrypted=False))
    other = {"guest": breast["guest"], "host": breast["host"].select(breast["host"].ids[::-1])}
    with pytest.raises(DataError, match="ids differ"):
        predict_local(fit, other)


def test_a_host_set_to_encrypted_refuses_a_plaintext_guest(breast):
    tables = _rows(breast, np.arange(60))
    roles = {
        "guest": lambda ch: guest(ch, tables["guest"], SecureBoostConfig(num_trees=1, encrypted=False)),
        "host": lambda ch: host(ch, tables["host"], SecureBoostConfig(key_bits=KEY_BITS)),
    }
    with pytest.raises(ProtocolError, match="encrypted = False, but this host is set to True"):
        run_parties(roles, timeout_s=60)


def test_registry_builds_secureboost_from_toml_settings():
    from hamrah.vertical.registry import build_config, resolve

    spec = resolve("secureboost")
    assert set(spec.roles) == {"guest", "host"}
    config = build_config("secureboost", {"num_trees": 5, "learning_rate": 1, "encrypted": False})
    assert config == SecureBoostConfig(num_trees=5, learning_rate=1.0, encrypted=False)
    with pytest.raises(ConfigError, match="max_depth"):
        build_config("secureboost", {"max_depth": 0})


def test_prediction_refuses_another_schema_and_logs_nothing(breast, caplog):
    caplog.set_level("DEBUG")
    fit = fit_local(breast, SecureBoostConfig(num_trees=2, encrypted=False))
    predict_local(fit, breast)
    assert not [r for r in caplog.records if r.name.startswith("hamrah")], "SecureBoost must not log"
    h = breast["host"]
    narrow = {"guest": breast["guest"], "host": PartyTable(h.ids, h.features[:, :5], h.feature_names[:5])}
    with pytest.raises(DataError, match="host: 5 features, the model was trained on 20"):
        predict_local(fit, narrow)


def test_training_resumes_after_the_last_tree_every_party_completed(breast, tmp_path):
    """Checkpoints after each tree, saved and read back as `hamrah party` does: the guest kept 3 trees,
    the host 2, so both go on after tree 2 and end with the uninterrupted model."""
    from hamrah.parties.runner import _save, load_checkpoints
    from hamrah.vertical.secureboost_model import BoostCheckpoint

    tables = _with_missing(breast, 0.1, 1)
    config = SecureBoostConfig(num_trees=4, max_depth=2, encrypted=False)

    def roles(resume=None, keep=None):
        resume, keep = resume or {}, keep or {}
        return {
            "guest": lambda ch: guest(
                ch, tables["guest"], config, ("host",), None, resume.get("guest"), keep.get("guest")
            ),
            "host": lambda ch: host(ch, tables["host"], resume=resume.get("host"), on_epoch=keep.get("host")),
        }

    keep = {
        n: (lambda s, n=n: _save(tmp_path / n, s) if s.epoch <= {"guest": 3, "host": 2}[n] else None) for n in tables
    }
    full, _ = run_parties(roles(keep=keep), timeout_s=60)
    saved = {n: load_checkpoints(tmp_path / n, BoostCheckpoint) for n in tables}
    assert sorted(saved["guest"]) == [1, 2, 3] and sorted(saved["host"]) == [1, 2]
    again, stats = run_parties(roles(resume=saved), timeout_s=60)
    assert len(again["guest"].trees) == 4
    for a, b in zip(again["guest"].trees, full["guest"].trees):
        for name in ("owner", "feature", "threshold", "left", "right", "value", "missing_left"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("features", "thresholds", "missing_left"):
        np.testing.assert_array_equal(getattr(again["host"], name), getattr(full["host"], name))
    assert (
        stats["host"].received_bytes["guest"]
        < 0.8 * run_parties(roles(), timeout_s=60)[1]["host"].received_bytes["guest"]
    )
    with pytest.raises(ConfigError, match="saved by a run with other protocol settings"):
        _save(tmp_path / "other", saved["host"][1], '{"max_depth": 3}')
        load_checkpoints(tmp_path / "other", BoostCheckpoint, '{"max_depth": 2}')
    with pytest.raises(DataError, match="the checkpoint after tree 2 is not this guest's"):
        other = {**saved, "guest": {2: BoostCheckpoint(2, saved["guest"][2].model, saved["guest"][2].margin[:-1])}}
        run_parties(roles(resume=other), timeout_s=60)


def test_an_encrypted_host_receives_no_gradient_hessian_or_label_in_the_clear(breast):
    """The guarantee of docs/secureboost.md: in encrypted mode the host gets g and h only as Paillier
    ciphertexts; every field it receives is one of these, and no float array reaches it."""
    tables = _rows(breast, np.arange(120))
    seen: dict[str, set] = {}

    def spy(ch):
        recv = ch.recv

        def recording(frm, tag):
            msg = recv(frm, tag)
            seen.setdefault(tag, set()).update(msg)
            assert not any(isinstance(v, np.ndarray) and v.dtype.kind == "f" for v in msg.values()), tag
            return msg

        ch.recv = recording
        return host(ch, tables["host"], rng=np.random.default_rng(4))

    config = SecureBoostConfig(num_trees=2, max_depth=2, key_bits=KEY_BITS)
    run_parties({"guest": lambda ch: guest(ch, tables["guest"], config, ("host",)), "host": spy}, timeout_s=120)
    assert {k: v for k, v in seen.items() if k.startswith("sbt.")} == {
        "sbt.align": {"psi"},
        "sbt.setup": {"ids", "encrypted", "max_bins", "precision_bits", "n", "hs"},
        "sbt.start": {"start"},
        "sbt.tree": {"more", "features", "ct", "key"},  # ct: [[h 2^S + g]] per row
        "sbt.level": {"done", "pos", "nodes", "parent", "sibling", "direct"},
        "sbt.split": {"nodes", "feature", "bin", "missing_left"},
    }
