"""Vertical LR's arithmetic: encryptions whose random factors come from the offline pool decrypt
exactly, never share a factor, and the pool's accounting is right."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.vertical import he
from hamrah.vertical.lr_ops import PaillierOps, PlainOps

KEY = he.keygen(1024, np.random.default_rng(11))


@settings(max_examples=12, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=8), st.integers(0, 12), st.booleans())
def test_pooled_encryptions_decrypt_exactly_and_never_reuse_a_factor(values, ahead, key_holder):
    ops = PaillierOps(KEY[0], 16, KEY[1] if key_holder else None)
    assert ops.reserve(ahead) >= 0.0 and len(ops.pool) == ahead
    a, b = ops.enc(np.array(values)), ops.enc(np.array(values))
    assert len(ops.pool) == max(ahead - 2 * len(values), 0)
    assert not set(a.cv.cts) & set(b.cv.cts)  # the same values, fresh factors: unrelated ciphertexts
    for e in (a, b):
        assert he.decrypt(KEY[1], e.cv) == he.encode(values, 16)
    assert ops.pool.cpu_s >= 0.0 and PlainOps().reserve(ahead) == 0.0
