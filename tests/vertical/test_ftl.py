"""Federated transfer learning: the protocol equals autograd on the paper's loss; Paillier equals plain."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.data.vertical import load_vertical
from hamrah.vertical import ftl, run_parties
from hamrah.vertical import ftl_math as fm
from hamrah.vertical.nets import roc_auc

KEY_BITS = 1024  # test-only key size, for speed; docs and benchmarks use 2048
SMALL = ftl.FTLConfig(hidden=(4,), dim=2, epochs=1, batch_size=30, key_bits=KEY_BITS)  # small nets: fast HE


@pytest.fixture(scope="module")
def breast():
    return ftl.transfer_split(load_vertical("breast"), 0.1, seed=0)


def _run(split, cfg, guest_role=None, host_role=None, timeout_s=60):
    return run_parties(
        {
            "guest": guest_role or (lambda c: ftl.guest(c, split.guest, split.overlap, cfg)),
            "host": host_role or (lambda c: ftl.host(c, split.host, split.overlap, cfg, split.host_only)),
        },
        timeout_s=timeout_s,
    )


def _reference(split, cfg):
    """Autograd on the joint Taylor loss, in one place, from the same start and batches."""
    g, h = split.guest, split.host
    net_a = ftl.representation_network(cfg, "guest", g.features.shape[1])
    net_b = ftl.representation_network(cfg, "host", h.features.shape[1])
    sa, sb = ftl.Standardizer.fit(g.features), ftl.Standardizer.fit(h.features)
    xa, xb = sa(g.features), sb(h.features)
    ya = torch.from_numpy(2 * g.labels.astype(np.float32) - 1)
    ra, rb = ftl.RowIndex(g.ids), ftl.RowIndex(h.ids)
    opts = [torch.optim.Adam(n.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) for n in (net_a, net_b)]
    for epoch in range(cfg.epochs):
        for ids in ftl.overlap_batches(cfg, split.overlap, epoch):
            ia, ib = ra.rows(ids, "a"), rb.rows(ids, "b")
            phi = fm.phi_of(fm.represent(net_a, xa), ya).double()
            ua, ub = fm.represent(net_a, xa[ia]).double(), fm.represent(net_b, xb[ib]).double()
            f = ub @ phi
            loss = (np.log(2) - 0.5 * ya[ia].double() * f + f**2 / 8).sum() + cfg.gamma / 2 * ((ua - ub) ** 2).sum()
            for o in opts:
                o.zero_grad()
            (loss / len(ids)).backward()
            for o in opts:
                o.step()
    with torch.no_grad():
        phi = fm.phi_of(fm.represent(net_a, xa), ya).double()
        return (fm.represent(net_b, xb[rb.rows(split.host_only, "b")]).double() @ phi).numpy()


@settings(max_examples=4, deadline=None)
@given(
    st.integers(1, 6),
    st.tuples(st.integers(2, 10)) | st.just(()),
    st.floats(0.0, 1.0),
    st.integers(5, 40),
    st.integers(0, 2**31),
)
def test_plain_protocol_equals_autograd_on_the_papers_loss(breast, dim, hidden, gamma, batch, seed):
    cfg = ftl.FTLConfig(dim=dim, hidden=hidden, gamma=gamma, batch_size=batch, seed=seed, epochs=1)
    res, _ = _run(breast, cfg)
    np.testing.assert_allclose(res["host"].scores, _reference(breast, cfg), atol=2e-5)


def test_paillier_mode_gives_the_plain_model_up_to_fixed_point(breast):
    plain = replace(SMALL, epochs=2)
    res_p, stats_p = _run(breast, plain)
    res_e, stats_e = _run(breast, replace(plain, mode="paillier"))
    np.testing.assert_allclose(res_e["host"].scores, res_p["host"].scores, atol=1e-5)
    np.testing.assert_allclose(res_e["guest"].train_loss, res_p["guest"].train_loss, atol=1e-6)
    for party in ("guest", "host"):
        for a, b in zip(res_e[party].model.network.parameters(), res_p[party].model.network.parameters()):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), atol=1e-5)
    assert stats_e["guest"].total_bytes > 10 * stats_p["guest"].total_bytes  # ciphertexts are big


def test_ftl_beats_the_label_holder_alone_on_the_hosts_rows():
    """Default credit, 2,000 rows, 15% overlap: the host's features carry more signal than the guest's."""
    from sklearn.linear_model import LogisticRegression

    full = load_vertical("default_credit")
    ids = np.sort(np.random.default_rng(1).choice(full["guest"].ids, 2000, replace=False))
    tables = {k: v.select(ids) for k, v in full.items()}
    split = ftl.transfer_split(tables, 0.15, seed=0)
    res, _ = _run(split, ftl.FTLConfig(epochs=6))
    ftl_auc = roc_auc(split.host_only_labels, res["host"].scores)
    alone = LogisticRegression(max_iter=2000).fit(split.guest.features, split.guest.labels)
    # optimistic for the guest: it uses guest features of the host's rows, which the guest does not have
    alone_auc = roc_auc(
        split.host_only_labels, alone.decision_function(tables["guest"].select(split.host_only).features)
    )
    assert ftl_auc > alone_auc + 0.01


class _Tamper:
    """A channel whose outgoing messages of one tag pass through ``change`` first."""

    def __init__(self, inner, tag, change):
        self.inner, self.tag, self.change = inner, tag, change
        self.name, self.peers, self.stats = inner.name, inner.peers, inner.stats

    def send(self, to, tag, message):
        self.inner.send(to, tag, self.change(dict(message)) if tag == self.tag else message)

    def recv(self, frm, tag):
        return self.inner.recv(frm, tag)


def _tampered_host(split, cfg, tag, change):
    return lambda c: ftl.host(_Tamper(c, tag, change), split.host, split.overlap, cfg, split.host_only)


@pytest.mark.parametrize(
    "tag,change,match",
    [
        ("ftl/terms", lambda m: {**m, "ct": m["ct"][:-1]}, "expected .* ciphertexts"),
        ("ftl/terms", lambda m: {**m, "key": b"\0" * 16}, "another public key"),
        ("ftl/terms", lambda m: {**m, "step": m["step"] - 1}, "replayed"),
        ("ftl/masked", lambda m: {**m, "ct": (0,) * len(m["ct"])}, "not a ciphertext"),
        ("ftl/terms", lambda m: {**m, "ct": m["ct"][:-1] + (1 << 2048,)}, r"\[\d+\]: not a ciphertext"),  # >= n^2
        ("ftl/unmasked", lambda m: {**m, "v": tuple(v ^ (1 << 700) for v in m["v"])}, "out of range"),
    ],
)
def test_tampered_encrypted_messages_are_refused_by_name(breast, tag, change, match):
    cfg = replace(SMALL, mode="paillier")
    with pytest.raises(ProtocolError, match=match) as e:
        _run(breast, cfg, host_role=_tampered_host(breast, cfg, tag, change), timeout_s=30)
    assert "'host'" in str(e.value) and len(str(e.value)) < 300  # names the sender, carries no payload


def test_a_plain_terms_vector_of_the_wrong_size_is_refused(breast):
    cfg = ftl.FTLConfig(epochs=1)
    with pytest.raises(ProtocolError, match="ftl/terms from 'host'.*shape"):
        _run(breast, cfg, host_role=_tampered_host(breast, cfg, "ftl/terms", lambda m: {**m, "t": m["t"][1:]}))


def test_mismatched_configs_and_unknown_overlap_ids_are_refused(breast):
    cfg = ftl.FTLConfig(epochs=1)
    with pytest.raises(ProtocolError, match="config differs"):
        _run(
            breast,
            cfg,
            host_role=lambda c: ftl.host(c, breast.host, breast.overlap, replace(cfg, gamma=0.5), breast.host_only),
        )
    lacking = breast.host.select(np.setdiff1d(breast.host.ids, breast.overlap[:2]))
    with pytest.raises(ProtocolError, match="overlap ids"):
        _run(breast, cfg, host_role=lambda c: ftl.host(c, lacking, breast.overlap, cfg, breast.host_only))
    fewer = np.setdiff1d(breast.overlap, breast.overlap[:2])  # the host's PSI found fewer shared ids
    with pytest.raises(
        ProtocolError, match=rf"its overlap \({len(breast.overlap)} ids\) differs .*\({len(fewer)} ids\)"
    ):
        _run(breast, cfg, host_role=lambda c: ftl.host(c, lacking, fewer, cfg, breast.host_only))


def _tampered_guest(split, cfg, tag, change):
    return lambda c: ftl.guest(_Tamper(c, tag, lambda m: change(m, split)), split.guest, split.overlap, cfg)


def _at_step(step, change):
    return lambda m, split: change(m, split) if m["step"] == step else m


@pytest.mark.parametrize("mode", ["plain", "paillier"])
def test_a_guest_asking_for_the_hosts_other_rows_is_refused(breast, mode):
    """The host answers ftl/batch only with the overlap's agreed batches: a curious guest asking for
    host-only ids (their representations, or gradient terms of them) gets nothing and is named."""
    cfg = replace(SMALL, mode=mode)
    k = len(ftl.overlap_batches(cfg, breast.overlap, 0)[1])
    peek = _at_step(1, lambda m, split: {**m, "ids": split.host_only[:k]})
    with pytest.raises(ProtocolError, match=rf"ftl/batch from 'guest': step 1 asks for {k} ids, {k} outside the "):
        _run(breast, cfg, guest_role=_tampered_guest(breast, cfg, "ftl/batch", peek), timeout_s=30)


@pytest.mark.parametrize(
    "tag,change,match",
    [
        # a larger "overlap" at setup, with some of the host's other ids
        ("ftl/setup", lambda m, s: {**m, "overlap": np.sort(np.r_[s.overlap, s.host_only[:3]])}, "differs from this"),
        # the overlap's own ids, but not this step's batch (another order, a repeat, another dtype)
        ("ftl/batch", _at_step(0, lambda m, s: {**m, "ids": m["ids"][::-1]}), "0 outside the overlap, not the agreed"),
        ("ftl/batch", _at_step(0, lambda m, s: {**m, "ids": np.r_[m["ids"], m["ids"][:1]]}), "not the agreed batch"),
        ("ftl/batch", _at_step(0, lambda m, s: {**m, "ids": m["ids"].astype(np.int32)}), "1-D int64 array"),
        # scoring before the epoch ends, a skipped step
        ("ftl/batch", lambda m, s: {**m, "mode": "score"} if m["mode"] == "epoch" else m, "step 2, mode 'epoch'"),
        ("ftl/batch", lambda m, s: {**m, "step": m["step"] + 1}, r"expected step 0, .* got 1"),
    ],
)
def test_a_guest_off_the_agreed_schedule_is_refused(breast, tag, change, match):
    with pytest.raises(ProtocolError, match=f"{tag} from 'guest': .*{match}"):
        _run(breast, SMALL, guest_role=_tampered_guest(breast, SMALL, tag, change), timeout_s=30)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(
        ["dim", "epochs", "batch_size", "lr", "gamma", "mode", "key_bits", "precision_bits", "hidden", "weight_decay"]
    ),
    st.one_of(
        st.integers(-3, 0),
        st.floats(allow_nan=True),
        st.text(max_size=3),
        st.just([4]),
        st.just(512),
        st.just(True),
        st.just(40),
    ),
)
def test_bad_config_values_are_refused_by_name(name, value):
    try:
        ftl.FTLConfig(**{name: value})
    except ConfigError as e:
        assert name in str(e)
    else:  # some draws are valid (gamma=0.0, weight_decay=0, epochs=40, ...)
        assert isinstance(value, (int, float)) and not isinstance(value, bool)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**31), st.floats(0.0, 2.0))
def test_the_linear_maps_give_the_gradients_of_the_loss(b, d, seed, gamma):
    """M_A t_B + c_A and M_B t_A + c_B equal autograd's gradients of the batch loss (and the loss)."""
    rng = np.random.default_rng(seed)
    y = rng.choice([-1.0, 1.0], b)
    phi, ua, ub = (torch.tensor(rng.uniform(-1, 1, s), requires_grad=True) for s in (d, (b, d), (b, d)))
    f = ub @ phi
    loss = (np.log(2) - 0.5 * torch.from_numpy(y) * f + f**2 / 8).sum() + gamma / 2 * ((ua - ub) ** 2).sum()
    loss.backward()
    p, a, u = (t.detach().numpy() for t in (phi, ua, ub))
    m, c = fm.guest_map(y, p, a, gamma)
    out = m @ fm.host_terms(u) + c
    np.testing.assert_allclose(out[:d], phi.grad.numpy(), atol=1e-9)
    np.testing.assert_allclose(out[d:-1], ua.grad.numpy().ravel(), atol=1e-9)
    np.testing.assert_allclose(out[-1], float(loss.detach()), atol=1e-9)
    m, c = fm.host_map(u, gamma)
    np.testing.assert_allclose(m @ fm.guest_terms(y, p, a) + c, ub.grad.numpy().ravel(), atol=1e-9)


def test_registry_roles_find_the_overlap_by_psi_and_score_the_hosts_other_rows(breast):
    from hamrah.vertical.registry import build_config, resolve

    spec = resolve("ftl")
    cfg = build_config("ftl", {"hidden": [4], "dim": 2, "epochs": 1})
    res, _ = run_parties(
        {p: (lambda c, p=p: spec.roles[p](c, getattr(breast, p), cfg)) for p in ("guest", "host")}, timeout_s=60
    )
    direct, _ = _run(breast, cfg)
    np.testing.assert_allclose(res["host"].scores, direct["host"].scores, atol=1e-6)


def test_ftl_scores_the_hosts_breast_rows_the_label_holder_cannot(breast):
    """The label holder has no features for the host's other rows: alone it can only give them one score
    (AUC 0.5). FTL, with the settings bench_ftl.py's cross-validation on the overlap chose, ranks them."""
    res, _ = _run(breast, ftl.FTLConfig(dim=8, epochs=20, gamma=1.0))
    y = breast.host_only_labels
    assert roc_auc(y, np.full(len(y), breast.guest.labels.mean())) == 0.5
    assert roc_auc(y, res["host"].scores) > 0.95


@pytest.mark.parametrize("mode", ["plain", "paillier"])
def test_training_resumes_after_the_last_epoch_both_parties_completed(breast, mode):
    """Checkpoints (network, Adam's state, the guest's losses) read back from their saved arrays resume
    to the uninterrupted run's scores; the parties go on from the last epoch both completed."""
    from hamrah.vertical.nets import NetCheckpoint
    from hamrah.vertical.saved import model_arrays

    cfg = replace(SMALL, epochs=3, mode=mode)
    saved: dict = {"guest": {}, "host": {}}

    def keep(name):
        return lambda s: saved[name].__setitem__(s.epoch, NetCheckpoint.from_arrays(model_arrays(s)))

    whole, _ = _run(
        breast,
        cfg,
        lambda c: ftl.guest(c, breast.guest, breast.overlap, cfg, on_epoch=keep("guest")),
        lambda c: ftl.host(c, breast.host, breast.overlap, cfg, breast.host_only, on_epoch=keep("host")),
    )
    assert sorted(saved["guest"]) == sorted(saved["host"]) == [1, 2, 3]
    resumed, _ = _run(
        breast,
        cfg,
        lambda c: ftl.guest(c, breast.guest, breast.overlap, cfg, resume={1: saved["guest"][1]}),
        lambda c: ftl.host(
            c, breast.host, breast.overlap, cfg, breast.host_only, resume={e: saved["host"][e] for e in (1, 2)}
        ),
    )
    np.testing.assert_allclose(resumed["host"].scores, whole["host"].scores, atol=1e-9)
    assert resumed["guest"].train_loss == pytest.approx(whole["guest"].train_loss, rel=1e-9)


@pytest.mark.parametrize(
    "done,match",
    [
        (np.array([1.0, 2.0]), "'done'"),  # not int64
        (np.array([[1]], dtype=np.int64), "'done'"),  # not a vector
        ("1,2", "'done'"),
    ],
)
def test_a_setup_whose_completed_epochs_are_not_an_int64_vector_is_refused(breast, done, match):
    cfg = ftl.FTLConfig(epochs=1)
    host = _tampered_host(breast, cfg, "ftl/setup", lambda m: {**m, "done": done})
    with pytest.raises(ProtocolError, match=f"ftl/setup from 'host': {match}"):
        _run(breast, cfg, host_role=host, timeout_s=30)


def test_a_peer_naming_epochs_this_party_never_completed_cannot_make_it_skip_them(breast):
    """The start is the last epoch *both* completed: a host that claims every epoch when the guest
    holds none trains from the start, to the same model as an honest host."""
    cfg = replace(SMALL, epochs=2)
    honest, _ = _run(breast, cfg)
    host = _tampered_host(breast, cfg, "ftl/setup", lambda m: {**m, "done": np.arange(1, 3, dtype=np.int64)})
    lying, _ = _run(breast, cfg, host_role=host)
    np.testing.assert_array_equal(lying["host"].scores, honest["host"].scores)
    assert lying["guest"].train_loss == honest["guest"].train_loss
