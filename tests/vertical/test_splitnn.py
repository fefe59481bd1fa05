"""Split learning: the split run equals a central model of the same architecture; bad input is refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError, DataError, HamrahError, ProtocolError
from hamrah.data.vertical import PartyTable, load_vertical
from hamrah.vertical import run_parties
from hamrah.vertical import splitnn as sn
from hamrah.vertical.nets import roc_auc


@pytest.fixture(scope="module")
def breast():
    t = load_vertical("breast")
    g, h = t["guest"], t["host"]
    ids = np.random.default_rng(0).permutation(g.ids)
    return g, h.select(g.ids), np.sort(ids[:400]), np.sort(ids[400:])


def _split(g, h, cfg, tr, te, hosts=None):
    hosts = hosts or {"host": h}
    roles = {"guest": lambda c: sn.guest(c, g, cfg, tuple(hosts), train_ids=tr, eval_ids=te)}
    roles.update({n: (lambda c, t=t: sn.host(c, t, cfg)) for n, t in hosts.items()})
    return run_parties(roles, timeout_s=60)


@settings(max_examples=6, deadline=None)
@given(
    st.tuples(st.integers(1, 12)).map(tuple) | st.just(()),
    st.integers(1, 6),
    st.integers(8, 130),
    st.integers(0, 2**31),
    st.integers(1, 2),
)
def test_split_run_equals_central_run_of_the_same_architecture(breast, hidden, cut, batch, seed, epochs):
    g, h, tr, te = breast
    cfg = sn.SplitNNConfig(bottom_hidden=hidden, cut_dim=cut, batch_size=batch, seed=seed, epochs=epochs)
    res, _ = _split(g, h, cfg, tr[:150], te)
    central = sn.train_central({"guest": g, "host": h}, cfg, train_ids=tr[:150], eval_ids=te)
    np.testing.assert_allclose(res["guest"].scores, central.scores, atol=1e-5)
    np.testing.assert_allclose(res["guest"].train_loss, central.train_loss, rtol=1e-5)


@pytest.mark.parametrize("wire,noise", [("float32", 0.0), ("float16", 0.0), ("float32", 0.05)])
def test_auc_within_001_of_the_central_model_on_breast(breast, wire, noise):
    g, h, tr, te = breast
    cfg = sn.SplitNNConfig(epochs=15, wire_dtype=wire, noise_std=noise)
    res, stats = _split(g, h, cfg, tr, te)
    central = sn.train_central({"guest": g, "host": h}, cfg, train_ids=tr, eval_ids=te)
    y = g.select(te).labels
    assert abs(roc_auc(y, res["guest"].scores) - roc_auc(y, central.scores)) <= 0.01
    assert roc_auc(y, central.scores) > 0.98
    # float16 rounding and noise reach the top network; float32 without noise is the central model
    assert np.allclose(res["guest"].scores, central.scores, atol=1e-6) == (wire == "float32" and noise == 0)
    # activations of 400 rows x 15 epochs + test rows, each cut_dim values, each way
    width = 2 if wire == "float16" else 4
    assert stats["host"].sent_bytes["guest"] > (400 * 15 + len(te)) * cfg.cut_dim * width


def test_two_hosts_equal_the_central_model_on_three_blocks(breast):
    g, h, tr, te = breast
    h1 = PartyTable(h.ids, h.features[:, :8], h.feature_names[:8])
    h2 = PartyTable(h.ids, h.features[:, 8:], h.feature_names[8:])
    cfg = sn.SplitNNConfig(epochs=2)
    res, _ = _split(g, h, cfg, tr, te, hosts={"bank": h1, "shop": h2})
    central = sn.train_central({"guest": g, "bank": h1, "shop": h2}, cfg, train_ids=tr, eval_ids=te)
    np.testing.assert_allclose(res["guest"].scores, central.scores, atol=1e-5)


def test_prediction_session_gives_the_training_runs_scores(breast):
    g, h, tr, te = breast
    cfg = sn.SplitNNConfig(epochs=2)
    res, _ = _split(g, h, cfg, tr, te)
    out, _ = run_parties(
        {
            "guest": lambda c: sn.predict(c, res["guest"].model, g, cfg, te),
            "host": lambda c: sn.serve(c, res["host"], h, cfg),
        },
        timeout_s=60,
    )
    np.testing.assert_allclose(out["guest"], res["guest"].scores, atol=1e-6)
    assert out["host"] == -(-len(te) // cfg.batch_size)  # batches answered


def test_guest_sends_only_ids_steps_and_gradients(breast):
    """The labels, the top network and the guest's features never leave the guest."""
    g, h, tr, _ = breast
    cfg = sn.SplitNNConfig(epochs=1)
    seen: dict[str, set] = {}

    def spy(c):
        send = c.send

        def recording(to, tag, message):
            seen.setdefault(tag, set()).update(message)
            send(to, tag, message)

        c.send = recording
        return sn.guest(c, g, cfg, train_ids=tr)

    run_parties({"guest": spy, "host": lambda c: sn.host(c, h, cfg)}, timeout_s=60)
    assert seen == {
        "psi/hello": {"settings", "size"},  # PSI's leader and kind of ids; how many ids the guest holds
        "psi/ring1": {"points"},  # PSI (the guest leads): blinded ids only
        "psi/full": {"points"},
        "psi/result": {"points"},
        "splitnn/setup": {"config", "train_ids", "done"},  # done: the epochs it holds checkpoints of
        "splitnn/start": {"epoch"},
        "splitnn/batch": {"step", "mode", "ids"},
        "splitnn/gradient": {"step", "g"},
    }


def _bad_host(behaviour):
    """A host that follows the protocol except for one faulty activations message."""

    def role(c):
        c.recv("guest", "splitnn/setup")
        c.send("guest", "splitnn/ready", {"rows": 1, "done": np.zeros(0, np.int64)})
        c.recv("guest", "splitnn/start")
        msg = c.recv("guest", "splitnn/batch")
        a = np.zeros((len(msg["ids"]), 8), np.float32)
        c.send("guest", "splitnn/activations", behaviour(msg["step"], a))
        c.recv("guest", "splitnn/gradient")  # never comes: the guest stops first

    return role


@pytest.mark.parametrize(
    "behaviour,match",
    [
        (lambda s, a: {"step": s, "a": a[:, :5]}, "shape"),
        (lambda s, a: {"step": s, "a": a.astype(np.float64)}, "float32"),
        (lambda s, a: {"step": s, "a": np.full_like(a, np.nan)}, "finite"),
        (lambda s, a: {"step": s - 1, "a": a}, "replayed"),
        (lambda s, a: {"a": a}, "step"),
    ],
)
def test_a_faulty_host_message_is_refused_by_name(breast, behaviour, match):
    g, _, tr, _ = breast
    cfg = sn.SplitNNConfig(epochs=1, psi=False)  # the hand-written host runs no PSI
    with pytest.raises(ProtocolError, match=match) as e:
        run_parties({"guest": lambda c: sn.guest(c, g, cfg, train_ids=tr), "host": _bad_host(behaviour)}, timeout_s=20)
    assert "activations from 'host'" in str(e.value)


def test_mismatched_configs_and_ids_are_refused(breast):
    g, h, tr, _ = breast
    cfg = sn.SplitNNConfig(epochs=1)
    with pytest.raises(ProtocolError, match="config differs"):
        run_parties(
            {
                "guest": lambda c: sn.guest(c, g, cfg, train_ids=tr),
                "host": lambda c: sn.host(c, h, replace(cfg, cut_dim=4)),
            },
            timeout_s=20,
        )
    cfg = replace(cfg, psi=False)  # the guest names its training ids; the host lacks three
    with pytest.raises(ProtocolError, match="ids are not in this party's table"):
        run_parties(
            {
                "guest": lambda c: sn.guest(c, g, cfg, train_ids=tr),
                "host": lambda c: sn.host(c, h.select(tr[:-3]), cfg),
            },
            timeout_s=20,
        )


def test_psi_trains_on_the_ids_every_party_holds(breast):
    """Each party's file may hold other ids, in any order: PSI first, then the shared ids only (the
    model the parties would train on the shared rows alone)."""
    g, h, tr, _ = breast
    cfg = sn.SplitNNConfig(epochs=1)
    shuffled = h.select(np.random.default_rng(1).permutation(tr[5:]))  # 5 ids fewer, in another order
    res, _ = run_parties(
        {"guest": lambda c: sn.guest(c, g, cfg), "host": lambda c: sn.host(c, shuffled, cfg)}, timeout_s=60
    )
    central = sn.train_central({"guest": g, "host": h}, cfg, train_ids=tr[5:])
    np.testing.assert_allclose(res["guest"].train_loss, central.train_loss, rtol=1e-5)
    with pytest.raises(DataError, match="splitnn: the parties share no ids"):
        run_parties(
            {
                "guest": lambda c: sn.guest(c, g, cfg),
                "host": lambda c: sn.host(c, PartyTable(h.ids + 10**6, h.features, h.feature_names), cfg),
            },
            timeout_s=20,
        )


def test_a_guest_asking_for_the_hosts_rows_outside_the_intersection_is_refused(breast):
    """With PSI the host answers only for the shared ids: a curious guest asking (in a training or an
    evaluation batch) for the activations of a row only the host holds is refused; the host used to
    answer for every id of its file."""
    g, h, tr, te = breast
    cfg = sn.SplitNNConfig(epochs=1)

    def curious(mode):
        def role(c):
            send = c.send

            def peeking(to, tag, message):
                if tag == "splitnn/batch" and message["mode"] == mode:
                    message = {**message, "ids": te[: len(message["ids"])]}
                send(to, tag, message)

            c.send = peeking
            return sn.guest(c, g.select(tr), cfg, eval_ids=tr[:10])

        return role

    for mode in ("train", "eval"):
        with pytest.raises(ProtocolError, match=r"splitnn/batch from 'guest': (\d+) of \1 ids are not in this"):
            run_parties({"guest": curious(mode), "host": lambda c: sn.host(c, h, cfg)}, timeout_s=20)


def test_prediction_with_another_schema_is_refused(breast):
    g, h, tr, te = breast
    cfg = sn.SplitNNConfig(epochs=1)
    res, _ = _split(g, h, cfg, tr, te)
    renamed = PartyTable(h.ids, h.features, tuple(f"z{i}" for i in range(h.features.shape[1])))
    with pytest.raises(DataError, match="differ from the model"):
        sn.serve(None, res["host"], renamed, cfg)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(
        ["cut_dim", "epochs", "batch_size", "lr", "noise_std", "wire_dtype", "bottom_hidden", "weight_decay", "seed"]
    ),
    st.one_of(
        st.integers(-5, 0), st.floats(allow_nan=True), st.text(max_size=3), st.just([4]), st.just(True), st.just((0,))
    ),
)
def test_bad_config_values_are_refused_by_name(name, value):
    try:
        sn.SplitNNConfig(**{name: value})
    except ConfigError as e:
        assert name in str(e)
    else:  # a few draws are valid values (e.g. seed=0, noise_std=0.0)
        assert name in ("seed", "noise_std", "weight_decay", "lr") and isinstance(value, (int, float))


def test_a_host_that_fails_is_named_and_the_guest_stops(breast):
    g, _, tr, _ = breast

    def dies(c):
        c.recv("guest", "splitnn/setup")
        raise DataError("host data file unreadable")

    with pytest.raises(HamrahError, match="unreadable"):
        run_parties(
            {"guest": lambda c: sn.guest(c, g, sn.SplitNNConfig(epochs=1, psi=False), train_ids=tr), "host": dies},
            timeout_s=20,
        )


def test_training_resumes_after_the_last_epoch_every_party_completed(breast):
    """Checkpoints (networks, Adam's state, the guest's losses, the host's noise generator), saved as
    named arrays and read back, resume to the uninterrupted run's model, even with noise on."""
    from hamrah.vertical.saved import model_arrays

    g, h, tr, te = breast
    cfg = sn.SplitNNConfig(epochs=3, batch_size=64, noise_std=0.05)
    saved: dict = {"guest": {}, "host": {}}

    def keep(name):
        return lambda s: saved[name].__setitem__(s.epoch, sn.NetCheckpoint.from_arrays(model_arrays(s)))

    whole, _ = run_parties(
        {
            "guest": lambda c: sn.guest(c, g, cfg, train_ids=tr, eval_ids=te, on_epoch=keep("guest")),
            "host": lambda c: sn.host(c, h, cfg, on_epoch=keep("host")),
        },
        timeout_s=60,
    )
    assert sorted(saved["guest"]) == sorted(saved["host"]) == [1, 2, 3]
    # the guest got to epoch 2, the host only to 1: both go on after epoch 1
    resumed, _ = run_parties(
        {
            "guest": lambda c: sn.guest(
                c, g, cfg, train_ids=tr, eval_ids=te, resume={e: saved["guest"][e] for e in (1, 2)}
            ),
            "host": lambda c: sn.host(c, h, cfg, resume={1: saved["host"][1]}),
        },
        timeout_s=60,
    )
    np.testing.assert_allclose(resumed["guest"].scores, whole["guest"].scores, atol=1e-6)
    assert resumed["guest"].train_loss == pytest.approx(whole["guest"].train_loss, rel=1e-6)
    with pytest.raises(DataError, match="does not fit this party's networks"):
        other = replace(cfg, cut_dim=3)
        run_parties(
            {
                "guest": lambda c: sn.guest(c, g, other, train_ids=tr, resume={1: saved["guest"][1]}),
                "host": lambda c: sn.host(c, h, other, resume={1: saved["host"][1]}),
            },
            timeout_s=60,
        )


def test_a_guest_naming_an_epoch_the_host_never_completed_is_refused(breast):
    g, h, tr, _ = breast
    cfg = sn.SplitNNConfig(epochs=2, psi=False)

    def liar(c):  # a valid setup, then "go on after epoch 5", which the host holds no checkpoint of
        c.send("host", "splitnn/setup", {"config": cfg.digest(), "train_ids": tr, "done": np.array([5])})
        c.recv("host", "splitnn/ready")
        c.send("host", "splitnn/start", {"epoch": 5})

    with pytest.raises(ProtocolError, match="epoch 5, expected 0 or one this party completed"):
        run_parties({"guest": liar, "host": lambda c: sn.host(c, h, cfg)}, timeout_s=20)


def test_the_guest_reports_each_epochs_training_loss(breast):
    g, h, tr, _ = breast
    cfg = sn.SplitNNConfig(epochs=3, batch_size=64)
    seen = []
    roles = {"guest": lambda c: sn.guest(c, g, cfg, ("host",), train_ids=tr, on_epoch=seen.append)}
    roles["host"] = lambda c: sn.host(c, h, cfg)
    res, _ = run_parties(roles, timeout_s=60)
    assert [e.epoch for e in seen] == [1, 2, 3] and [e.loss for e in seen] == list(res["guest"].train_loss)
    assert seen[-1].progress() == f"epoch 3/3 done, training loss {res['guest'].train_loss[-1]:.4f}"


def test_a_host_whose_activations_make_the_loss_infinite_is_stopped_not_trained_on(breast):
    """Finite but huge activations (3e38 in float32) passed every check and the guest trained to an
    infinite loss, saving the model as if all were well; it now stops, naming each party's largest
    activation (an order of magnitude, no row's value)."""
    g, _, tr, _ = breast

    def host(c):
        c.recv("guest", "splitnn/setup")
        c.send("guest", "splitnn/ready", {"rows": 1, "done": np.zeros(0, np.int64)})
        c.recv("guest", "splitnn/start")
        msg = c.recv("guest", "splitnn/batch")
        a = np.full((len(msg["ids"]), 8), 3e38, np.float32)
        c.send("guest", "splitnn/activations", {"step": msg["step"], "a": a})
        c.recv("guest", "splitnn/gradient")  # never comes: the guest stops first

    cfg = sn.SplitNNConfig(epochs=1, psi=False)
    with pytest.raises(ProtocolError, match=r"training loss is inf in epoch 1; .* host 3e\+38") as e:
        run_parties({"guest": lambda c: sn.guest(c, g, cfg, train_ids=tr), "host": host}, timeout_s=20)
    assert "guest " in str(e.value) and "lower lr" in str(e.value)
