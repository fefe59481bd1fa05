"""FTL: the sizes a party announces are held to what the protocol agreed. ``out_len`` (the values the
other party decrypts for it per step) must be its network's parameter count, and ``count`` (the scores
the guest decrypts for the host) at most the rows the host holds: the PSI set size in the registry
roles. Either used to be taken up to 2^24, so one party could make the other decrypt 16M values."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tests.vertical.test_ftl import SMALL, _Tamper

from hamrah.core.errors import ProtocolError
from hamrah.data.vertical import load_vertical
from hamrah.vertical import ftl, run_parties
from hamrah.vertical import ftl_math as fm


@pytest.fixture(scope="module")
def split():
    return ftl.transfer_split(load_vertical("breast"), 0.1, seed=0)


def _host(split, cfg, tag, change, score=None):
    ids = split.host_only if score is None else score
    return lambda c: ftl.host(_Tamper(c, tag, change), split.host, split.overlap, cfg, ids)


def _run(split, cfg, guest=None, host=None):
    return run_parties(
        {
            "guest": guest or (lambda c: ftl.guest(c, split.guest, split.overlap, cfg)),
            "host": host or (lambda c: ftl.host(c, split.host, split.overlap, cfg, split.host_only)),
        },
        timeout_s=60,
    )


def test_network_size_is_the_parameter_count_of_the_network_built():
    for hidden, dim, features in [((16,), 4, 20), ((), 2, 7), ((5, 3), 1, 1)]:
        cfg = replace(SMALL, hidden=hidden, dim=dim)
        net = ftl.representation_network(cfg, "host", features)
        assert ftl.network_size(cfg, features) == fm.num_params(net)


@pytest.mark.parametrize("mode", ["plain", "paillier"])
def test_an_out_len_other_than_the_peers_network_is_refused(split, mode):
    cfg = replace(SMALL, mode=mode)
    features = split.host.features.shape[1]
    size = ftl.network_size(cfg, features)
    inflated = _host(split, cfg, "ftl/setup", lambda m: {**m, "out_len": 1 << 23})
    with pytest.raises(
        ProtocolError,
        match=rf"ftl/setup from 'host': out_len = {1 << 23}, expected {size} \(the parameters of its network over "
        rf"the {features} features it announced, hidden \(4,\), dim 2\)",
    ):
        _run(split, cfg, host=inflated)

    guest_size = ftl.network_size(cfg, split.guest.features.shape[1]) + 1
    lying_guest = lambda c: ftl.guest(
        _Tamper(c, "ftl/setup", lambda m: {**m, "out_len": guest_size + 1}), split.guest, split.overlap, cfg
    )
    with pytest.raises(ProtocolError, match=rf"from 'guest': out_len = {guest_size + 1}, expected {guest_size} .*loss"):
        _run(split, cfg, guest=lying_guest)


@pytest.mark.parametrize("features", [-1, True, 1 << 21, "20"])
def test_a_features_count_out_of_range_is_refused(split, features):
    host = _host(split, SMALL, "ftl/setup", lambda m: {**m, "features": features})
    with pytest.raises(
        ProtocolError, match=rf"ftl/setup from 'host': features = .*, expected an integer in 0..{1 << 20}$"
    ):
        _run(split, SMALL, host=host)


def test_a_host_asking_for_more_scores_than_its_rows_is_refused(split):
    rows = len(split.host.ids)
    greedy = _host(split, SMALL, "ftl/score", lambda m: {**m, "count": rows + 1})
    with pytest.raises(
        ProtocolError,
        match=rf"ftl/score from 'host': count = {rows + 1}, expected an integer in 0..{rows} \(the rows it announced\)",
    ):
        _run(split, SMALL, host=greedy)
    # as many as it holds is its right (every row of its own, the overlap's too)
    results, _ = _run(split, SMALL, host=lambda c: ftl.host(c, split.host, split.overlap, SMALL, split.host.ids))
    assert len(results["host"].scores) == rows


def test_in_the_registry_roles_the_host_is_held_to_its_psi_set(split):
    """The guest learned the host's set size in PSI: a host announcing more rows is refused."""
    rows = len(split.host.ids)

    def host(c):
        return ftl.party_host(_Tamper(c, "ftl/setup", lambda m: {**m, "rows": rows + 5}), split.host, SMALL)

    with pytest.raises(ProtocolError, match=rf"from 'host': rows = {rows + 5}, expected an integer in 0..{rows}$"):
        run_parties({"guest": lambda c: ftl.party_guest(c, split.guest, SMALL), "host": host}, timeout_s=60)

    def fewer(c):  # fewer rows than in PSI: not the table it intersected
        return ftl.party_host(_Tamper(c, "ftl/setup", lambda m: {**m, "rows": rows - 1}), split.host, SMALL)

    with pytest.raises(ProtocolError, match=rf"rows = {rows - 1}, expected {rows} \(the ids it held in PSI\)"):
        run_parties({"guest": lambda c: ftl.party_guest(c, split.guest, SMALL), "host": fewer}, timeout_s=60)


def test_a_scoring_session_allows_no_out_len_and_a_bounded_count(split):
    res, _ = _run(split, SMALL)
    phi, model = res["guest"].phi, res["host"].model
    table = split.host.select(split.host_only)

    def guest(c, change=lambda m: m):
        return ftl.score_guest(_Tamper(c, "ftl/setup", change), phi, SMALL)

    with pytest.raises(ProtocolError, match=r"from 'guest': out_len = 7, expected 0 \(scoring"):
        run_parties(
            {
                "guest": lambda c: guest(c, lambda m: {**m, "out_len": 7}),
                "host": lambda c: ftl.score_host(c, model, table, SMALL),
            },
            timeout_s=30,
        )
    flood = lambda c: ftl.score_host(
        _Tamper(c, "ftl/score", lambda m: {**m, "count": (1 << 24) + 1}), model, table, SMALL
    )
    with pytest.raises(
        ProtocolError, match=rf"from 'host': count = {(1 << 24) + 1}, expected .*0..{1 << 24} \(nothing"
    ):
        run_parties({"guest": guest, "host": flood}, timeout_s=30)


@pytest.mark.parametrize(
    "done,names",
    [(np.arange(1, 100), 99), (np.array([3]), 1), (np.array([0]), 1), (np.zeros(1 << 20), 1 << 20)],
)
def test_completed_epochs_beyond_the_run_are_refused(split, done, names):
    """A peer's checkpoints are of this run (they are kept per settings): at most ``epochs`` of them, in
    1..epochs. A longer list was turned into a Python set, so one 1 GiB message cost about 10 GB."""
    cfg = replace(SMALL, epochs=2)
    host = _host(split, cfg, "ftl/setup", lambda m: {**m, "done": done.astype(np.int64)})
    with pytest.raises(ProtocolError, match=rf"'done' names {names} epochs or trees, expected at most 2 in 1..2"):
        _run(split, cfg, host=host)
