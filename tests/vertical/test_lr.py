"""Vertical LR (CoordinatedLR with an arbiter, SSHE-LR without): plaintext and Paillier agree, the
breast model matches central sklearn, training converges and resumes, and bad input is refused."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from hamrah.core.errors import ConfigError, DataError, PartyFailed, ProtocolError
from hamrah.data.vertical import PartyTable, load_vertical
from hamrah.vertical import he, lr_coordinated, lr_sshe, run_parties
from hamrah.vertical.features import TRANSFORMS
from hamrah.vertical.lr_common import LRConfig, predict_guest, predict_host, standardise
from hamrah.vertical.lr_ops import SCHEMES

PROTOCOLS = [lr_coordinated, lr_sshe]
BREAST = load_vertical("breast")
G, H = BREAST["guest"], BREAST["host"].select(BREAST["guest"].ids)  # aligned: the tests below skip PSI
SMALL_G, SMALL_H = G.select(G.ids[:200]), H.select(G.ids[:200])


def roles(mod, guest: PartyTable, host: PartyTable, cfg: LRConfig, resume=None, wrap=None, **kw):
    wrap = wrap or {}
    out = {
        "guest": lambda ch: mod.guest(
            wrap.get("guest", lambda c: c)(ch), guest, cfg, (resume or {}).get("guest"), **kw
        ),
        "host": lambda ch: mod.host(wrap.get("host", lambda c: c)(ch), host, cfg, (resume or {}).get("host"), **kw),
    }
    if mod is lr_coordinated:
        out["arbiter"] = lambda ch: mod.arbiter(ch, None, cfg)
    return out


def scores(res, guest: PartyTable, host: PartyTable, cfg: LRConfig) -> np.ndarray:
    host = host.select(guest.ids)
    zg = standardise(guest.features, res["guest"], True, cfg.clip, cfg.transform)[0]
    zh = standardise(host.features, res["host"], False, cfg.clip, cfg.transform)[0]
    return zg @ res["guest"].weights + zh @ res["host"].weights


def table(draw_rows, feats, labels=False):
    ids = np.arange(len(draw_rows), dtype=np.int64)
    x = np.array(draw_rows, dtype=np.float64).reshape(len(draw_rows), feats)
    y = (x.sum(axis=1) > 0).astype(np.float64) if labels else None
    return PartyTable(ids, x, tuple(f"f{i}" for i in range(feats)), y)


@settings(max_examples=6, deadline=None)
@given(st.data())
def test_encrypted_and_plaintext_modes_agree(data):
    rows = data.draw(st.integers(4, 12))
    cell = st.floats(-5, 5, allow_nan=False)
    g = table(data.draw(st.lists(st.lists(cell, min_size=2, max_size=2), min_size=rows, max_size=rows)), 2, True)
    h = table(data.draw(st.lists(st.lists(cell, min_size=3, max_size=3), min_size=rows, max_size=rows)), 3)
    mod = data.draw(st.sampled_from(PROTOCOLS))
    base = {
        "epochs": 2,
        "batch_size": data.draw(st.integers(0, rows)),
        "lr": 0.3,
        "l2": 0.01,
        "key_bits": 1024,
        "tol": 0.0,
        "transform": data.draw(st.sampled_from(TRANSFORMS)),
        "scheme": data.draw(st.sampled_from(SCHEMES)),
    }
    plain, _ = run_parties(roles(mod, g, h, LRConfig(encrypted=False, **base)), timeout_s=60)
    enc, _ = run_parties(roles(mod, g, h, LRConfig(encrypted=True, **base)), timeout_s=60)
    for party in ("guest", "host"):
        np.testing.assert_allclose(enc[party].weights, plain[party].weights, atol=1e-3)


@pytest.mark.parametrize("mod", PROTOCOLS)
def test_breast_auc_within_0005_of_central_sklearn(mod):
    g, h = BREAST["guest"], BREAST["host"]
    x = np.hstack([g.features, h.select(g.ids).features])
    x = (x - x.mean(0)) / x.std(0)
    central = roc_auc_score(g.labels, LogisticRegression(max_iter=5000).fit(x, g.labels).decision_function(x))
    cfg = LRConfig(epochs=10, batch_size=64, lr=0.5, l2=1 / len(g.ids), encrypted=False, tol=0.0, psi=False)
    res, _ = run_parties(roles(mod, g, h, cfg), timeout_s=60)
    assert roc_auc_score(g.labels, scores(res, g, h, cfg)) > central - 0.005


@pytest.mark.parametrize("scheme", SCHEMES)
def test_one_encrypted_breast_epoch_matches_plaintext(scheme):
    g, h = SMALL_G, SMALL_H
    base = {"epochs": 1, "batch_size": 128, "lr": 0.5, "key_bits": 1024, "psi": False, "scheme": scheme}
    plain, _ = run_parties(roles(lr_coordinated, g, h, LRConfig(encrypted=False, **base)), timeout_s=60)
    enc, stats = run_parties(roles(lr_coordinated, g, h, LRConfig(encrypted=True, **base)), timeout_s=60)
    np.testing.assert_allclose(enc["host"].weights, plain["host"].weights, atol=1e-4)
    assert stats["arbiter"].total_bytes > 0


@pytest.mark.parametrize("encrypted,psi", [(False, True), (True, False)])
def test_two_hosts_train_the_model_one_host_with_their_columns_trains(encrypted, psi):
    """CoordinatedLR with the host's 20 columns split over two hosts gives the one-host model (the
    guest adds the hosts' encrypted partial scores); the hosts hear only from the guest and the arbiter."""
    rows = G.ids[:200] if encrypted else G.ids
    g, h = G.select(rows), H.select(rows)
    split = {
        "h1": PartyTable(h.ids, h.features[:, :10], h.feature_names[:10]),
        "h2": PartyTable(h.ids, h.features[:, 10:], h.feature_names[10:]),
    }
    kw = {"epochs": 3, "batch_size": 64, "encrypted": encrypted, "key_bits": 1024, "psi": psi}
    one, _ = run_parties(roles(lr_coordinated, g, h, LRConfig(**kw)), timeout_s=120)
    cfg = LRConfig(**kw, hosts=("h1", "h2"))
    parties = {
        "guest": lambda ch: lr_coordinated.guest(ch, g, cfg),
        "arbiter": lambda ch: lr_coordinated.arbiter(ch, None, cfg),
        **{n: (lambda ch, n=n: lr_coordinated.host(ch, split[n], cfg)) for n in split},
    }
    two, stats = run_parties(parties, timeout_s=120)
    tol = 1e-4 if encrypted else 1e-10  # fixed point rounds each host's part on its own
    np.testing.assert_allclose(two["guest"].weights, one["guest"].weights, atol=tol)
    np.testing.assert_allclose(np.concatenate([two["h1"].weights, two["h2"].weights]), one["host"].weights, atol=tol)
    for host in split:  # after PSI (among all data parties) a host talks to the guest and the arbiter only
        talks = {"guest", "arbiter"} | ({"h1", "h2"} - {host} if psi else set())
        assert set(stats[host].sent_bytes) | set(stats[host].received_bytes) == talks
    zg = standardise(g.features, two["guest"], True)[0]
    zs = {n: standardise(split[n].features, two[n], False)[0] for n in split}
    out, _ = run_parties(
        {
            "guest": lambda ch: predict_guest(ch, zg, two["guest"].weights, ("h1", "h2")),
            **{n: (lambda ch, n=n: predict_host(ch, zs[n], two[n].weights)) for n in split},
        },
        timeout_s=30,
    )
    u = zg @ two["guest"].weights + sum(zs[n] @ two[n].weights for n in split)
    np.testing.assert_allclose(out["guest"], 1 / (1 + np.exp(-u)))


def test_hosts_are_checked_and_sshe_takes_one():
    for hosts in ((), ("guest",), ("h", "h"), ("arbiter",), ("",)):
        with pytest.raises(ConfigError, match="lr.hosts"):
            LRConfig(hosts=hosts)
    cfg = LRConfig(hosts=("h1", "h2"), encrypted=False)
    with pytest.raises(ConfigError, match="sshe_lr runs between the guest and one host"):
        lr_sshe.guest(None, G, cfg)


@pytest.mark.parametrize("mod,transform", [(lr_coordinated, "standard"), (lr_sshe, "quantile")])
def test_converges_and_resumes_to_the_same_model(mod, transform):
    g, h = G, H
    cfg = LRConfig(
        epochs=40, batch_size=128, lr=0.2, l2=0.01, encrypted=False, tol=0.02, psi=False, transform=transform
    )
    seen = {"guest": {}, "host": {}}
    full, _ = run_parties(roles(mod, g, h, cfg, on_epoch=None), timeout_s=60)
    assert full["guest"].converged and full["guest"].epoch < cfg.epochs
    assert full["guest"].history[-1] < cfg.tol <= full["guest"].history[0]

    def keep(party):
        return lambda state: seen[party].__setitem__(state.epoch, state)

    run_parties(
        {
            "guest": lambda ch: mod.guest(ch, g, cfg, on_epoch=keep("guest")),
            "host": lambda ch: mod.host(ch, h, cfg, on_epoch=keep("host")),
            **({"arbiter": lambda ch: mod.arbiter(ch, None, cfg)} if mod is lr_coordinated else {}),
        },
        timeout_s=60,
    )
    # The host lost its last epoch: both resume from the last one they both completed.
    resume = {"guest": seen["guest"], "host": {k: v for k, v in seen["host"].items() if k <= 2}}
    again, _ = run_parties(roles(mod, g, h, cfg, resume=resume), timeout_s=60)
    for party in ("guest", "host"):
        np.testing.assert_array_equal(again[party].weights, full[party].weights)


@pytest.mark.parametrize("mod", PROTOCOLS)
def test_a_finished_run_started_again_trains_no_further_epoch(mod):
    cfg = LRConfig(epochs=2, batch_size=256, encrypted=False, psi=False)
    seen = {"guest": {}, "host": {}}
    parties = roles(mod, SMALL_G, SMALL_H, cfg)
    parties["guest"] = lambda ch: mod.guest(ch, SMALL_G, cfg, on_epoch=lambda s: seen["guest"].update({s.epoch: s}))
    parties["host"] = lambda ch: mod.host(ch, SMALL_H, cfg, on_epoch=lambda s: seen["host"].update({s.epoch: s}))
    first, _ = run_parties(parties, timeout_s=60)
    assert sorted(seen["guest"]) == [1, 2]
    calls = []
    again, _ = run_parties(roles(mod, SMALL_G, SMALL_H, cfg, resume=seen, on_epoch=calls.append), timeout_s=60)
    assert calls == [] and again["guest"].epoch == again["host"].epoch == 2
    for party in ("guest", "host"):
        np.testing.assert_array_equal(again[party].weights, first[party].weights)


@pytest.mark.parametrize("mod", PROTOCOLS)
def test_a_party_with_other_settings_or_other_ids_is_refused(mod):
    base = {"epochs": 1, "encrypted": False, "psi": False}
    other = LRConfig(**{**base, "epochs": 3})
    parties = roles(mod, SMALL_G, SMALL_H, LRConfig(**base))
    parties["host"] = lambda ch: mod.host(ch, SMALL_H, other)
    with pytest.raises(ConfigError, match=r"lr.epochs: 'host' runs with 3, the guest 'guest' with 1; every party"):
        run_parties(parties, timeout_s=30)
    reordered = SMALL_H.select(SMALL_H.ids[::-1])
    with pytest.raises(DataError, match="'host' holds other ids, or the same ids in another order"):
        run_parties(roles(mod, SMALL_G, reordered, LRConfig(**base)), timeout_s=30)


def test_prediction_reveals_only_partial_scores():
    g, h = G, H
    cfg = LRConfig(epochs=2, batch_size=128, encrypted=False, psi=False)
    res, _ = run_parties(roles(lr_sshe, g, h, cfg), timeout_s=60)
    zg = standardise(g.features, res["guest"], True)[0]
    zh = standardise(h.features, res["host"], False)[0]
    out, stats = run_parties(
        {
            "guest": lambda ch: predict_guest(ch, zg, res["guest"].weights, ("host",)),
            "host": lambda ch: predict_host(ch, zh, res["host"].weights),
        },
        timeout_s=30,
    )
    np.testing.assert_allclose(out["guest"], 1 / (1 + np.exp(-scores(res, g, h, cfg))))
    assert stats["host"].received_bytes == {}  # the host learns nothing


class Tamper:
    """A channel that rewrites one kind of outgoing message."""

    def __init__(self, channel, tag_part: str, change):
        self.inner, self.tag_part, self.change = channel, tag_part, change
        self.name, self.peers, self.stats = channel.name, channel.peers, channel.stats

    def send(self, to, tag, message):
        self.inner.send(to, tag, self.change(dict(message)) if self.tag_part in tag else message)

    def recv(self, frm, tag):
        return self.inner.recv(frm, tag)


ENC = LRConfig(epochs=1, batch_size=64, key_bits=1024, psi=False)


@pytest.mark.parametrize("mod, tag", [(lr_coordinated, "lr/ub/"), (lr_sshe, "lr/ub/")])
def test_a_ciphertext_of_the_wrong_size_is_refused(mod, tag, caplog):
    g, h = SMALL_G, SMALL_H
    short = {"host": lambda ch: Tamper(ch, tag, lambda m: {**m, "ct": m["ct"][:-1]})}
    with caplog.at_level(logging.DEBUG), pytest.raises(ProtocolError, match="expected 64 ciphertexts, got 63"):
        run_parties(roles(mod, g, h, ENC, wrap=short), timeout_s=60)
    assert not [r for r in caplog.records if r.name.startswith("hamrah")]  # nothing logged, no plaintext


def test_a_wrong_key_and_a_replay_are_refused():
    g, h = SMALL_G.select(SMALL_G.ids[:128]), SMALL_H.select(SMALL_G.ids[:128])
    other, _ = he.keygen(1024, np.random.default_rng(5))
    wrong = {
        "host": lambda ch: Tamper(ch, "lr/ub/", lambda m: {**m, **he.to_wire(he.encrypt(other, [0] * len(m["ct"])))})
    }
    with pytest.raises(ProtocolError, match="another public key"):
        run_parties(roles(lr_coordinated, g, h, ENC, wrap=wrong), timeout_s=60)

    class Replay(Tamper):
        def send(self, to, tag, message):
            if tag.startswith("lr/ub/0/1"):
                tag = "lr/ub/0/0"  # batch 0's message sent again as batch 1's
            self.inner.send(to, tag, message)

    with pytest.raises(ProtocolError, match="expected a 'lr/ub/0/1' message, got 'lr/ub/0/0'"):
        run_parties(roles(lr_coordinated, g, h, ENC, wrap={"host": lambda ch: Replay(ch, "", None)}), timeout_s=60)


def test_bad_tables_are_refused_and_the_others_stop_cleanly():
    g, h = BREAST["guest"], BREAST["host"]
    bad = PartyTable(g.ids, g.features, g.feature_names, g.labels * 2)
    with pytest.raises(DataError, match="labels must be 0 or 1"):
        run_parties(roles(lr_sshe, bad, h, LRConfig(encrypted=False)), timeout_s=30)
    stranger = PartyTable(h.ids + 10**6, h.features, h.feature_names)
    with pytest.raises((DataError, PartyFailed), match="share no ids"):
        run_parties(roles(lr_sshe, g, stranger, LRConfig(encrypted=False)), timeout_s=30)


KEY = he.keygen(1024, np.random.default_rng(7))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(-(2**95), 2**95), min_size=1, max_size=20))
def test_masked_gradients_pack_and_unpack_exactly(values):
    from hamrah.vertical.lr_common import Enc, PaillierOps

    ops = PaillierOps(KEY[0], 16, KEY[1])
    masked, masks = ops.mask(Enc(he.encrypt(KEY[0], values), 32))
    assert len(masked.cv) == ops.wire_count(len(values)) < len(values) + 1
    fields = ops.reveal(ops.from_wire(ops.to_wire(masked), ops.wire_count(len(values)), "g"))
    got = ops.unmask(fields, masks, len(values), "g")
    np.testing.assert_array_equal(got, he.decode(values, 32))
    with pytest.raises(ProtocolError, match="packed values"):
        ops.unmask({"ct": fields["ct"] + (1,)}, masks, len(values), "g")


def test_a_column_too_large_to_standardise_is_refused():
    x = np.ones((4, 3))
    x[:, 1] = [1e308, -1e308, 1e308, 0.0]
    with pytest.raises(DataError, match="feature column 1 is too large to standardise"):
        standardise(x, None, False)
