"""The FTL links: under Paillier with masks, each party gets exactly ``W t + w`` of the other's terms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hamrah.core.errors import ProtocolError
from hamrah.vertical import he, run_parties
from hamrah.vertical.ftl_crypto import PaillierLink, PlainLink

KEYS = {p: he.keygen(1024, np.random.default_rng(i)) for i, p in enumerate(("guest", "host"))}  # test-only size
BITS = 24


def _links(channel, plain: bool):
    peer = "host" if channel.name == "guest" else "guest"
    if plain:
        return PlainLink(channel, peer)
    return PaillierLink(channel, peer, KEYS[channel.name][1], KEYS[peer][0], BITS)


def _role(terms, w_mat, w_vec, their_len, peer_out, plain, left=None):
    def role(channel):
        link = _links(channel, plain)
        theirs = link.swap(0, terms, their_len)
        return link.apply(0, w_mat, w_vec, theirs, peer_out, left=left)

    return role


def _floats(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-50, 50, allow_nan=False))


@settings(max_examples=12, deadline=None)
@given(st.data(), st.integers(0, 6), st.integers(0, 6), st.integers(0, 5), st.integers(0, 5))
def test_paillier_link_returns_w_t_plus_w_for_both_parties(data, len_g, len_h, rows_g, rows_h):
    t_g, t_h = data.draw(_floats(len_g)), data.draw(_floats(len_h))
    w_g, w_h = data.draw(_floats((rows_g, len_h))), data.draw(_floats((rows_h, len_g)))
    c_g, c_h = data.draw(_floats(rows_g)), data.draw(_floats(rows_h))
    out = {}
    for plain in (True, False):
        out[plain], _ = run_parties(
            {"guest": _role(t_g, w_g, c_g, len_h, rows_h, plain), "host": _role(t_h, w_h, c_h, len_g, rows_g, plain)},
            timeout_s=30,
        )
    for party, (w, t, c) in {"guest": (w_g, t_h, c_g), "host": (w_h, t_g, c_h)}.items():
        np.testing.assert_allclose(out[True][party], w @ t + c, atol=1e-9)
        # fixed point: each product is off by at most |W| 2^-25 + |t| 2^-25, each w by 2^-25
        bound = (np.abs(w).sum(axis=1) + np.abs(t).sum() + 1) * 2.0**-24 if len(c) else 0
        assert np.all(np.abs(out[False][party] - (w @ t + c)) <= bound)


@settings(max_examples=8, deadline=None)
@given(st.data(), st.integers(1, 5), st.integers(1, 4), st.integers(0, 4))
def test_a_left_factor_is_applied_to_the_encrypted_result(data, length, rows, left_rows):
    """``left (W t + w)``: the host gets it under the guest's key; the guest gets plain ``W t + w``."""
    t_g, t_h = data.draw(_floats(length)), data.draw(_floats(length))
    w_g, w_h = data.draw(_floats((rows, length))), data.draw(_floats((rows, length)))
    c_g, c_h = data.draw(_floats(rows)), data.draw(_floats(rows))
    left = data.draw(_floats((left_rows, rows)))
    out, _ = run_parties(
        {
            "guest": _role(t_g, w_g, c_g, length, left_rows, False),
            "host": _role(t_h, w_h, c_h, length, rows, False, left=left),
        },
        timeout_s=30,
    )
    u = w_h @ t_g + c_h
    u_bound = (np.abs(w_h).sum(axis=1) + np.abs(t_g).sum() + 1) * 2.0**-24
    bound = np.abs(left) @ u_bound + np.abs(u).sum() * 2.0**-24 + 2.0**-24
    assert out["host"].shape == (left_rows,)
    assert np.all(np.abs(out["host"] - left @ u) <= bound)
    assert np.all(
        np.abs(out["guest"] - (w_g @ t_h + c_g)) <= (np.abs(w_g).sum(axis=1) + np.abs(t_h).sum() + 1) * 2.0**-24
    )


def test_a_result_decrypted_under_another_key_is_refused():
    """A host that masks its result under a key the guest does not own is named."""
    stranger = he.keygen(1024, np.random.default_rng(9))[0]

    def host(channel):
        link = PaillierLink(channel, "guest", KEYS["host"][1], stranger, BITS)
        theirs = link.swap(0, np.ones(2), 2)
        return link.apply(0, np.ones((1, 2)), np.zeros(1), theirs, 1)

    with pytest.raises(ProtocolError, match="another public key"):
        run_parties({"guest": _role(np.ones(2), np.ones((1, 2)), np.zeros(1), 2, 1, False), "host": host}, timeout_s=30)
