"""Seed streams (one root seed, split per purpose, round and client) and the named-parameter helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hamrah.core import params as P
from hamrah.core.seeds import client_rng, init_seed, partition_rng, sampling_rng


def _draw(rng: np.random.Generator, n: int = 8) -> np.ndarray:
    return rng.integers(0, 2**31, size=n)


def test_streams_are_deterministic():
    assert init_seed(7) == init_seed(7)
    assert np.array_equal(_draw(sampling_rng(7, 3)), _draw(sampling_rng(7, 3)))
    assert np.array_equal(_draw(client_rng(7, 3, 5)), _draw(client_rng(7, 3, 5)))
    assert np.array_equal(_draw(partition_rng(7)), _draw(partition_rng(7)))


def test_init_seed_is_an_int_and_depends_on_root_seed():
    seeds = {init_seed(s) for s in range(20)}
    assert all(isinstance(s, int) for s in seeds)
    assert len(seeds) == 20


def test_sampling_streams_differ_per_round_and_seed():
    draws = {tuple(_draw(sampling_rng(0, r))) for r in range(1, 30)}
    assert len(draws) == 29
    assert not np.array_equal(_draw(sampling_rng(0, 1)), _draw(sampling_rng(1, 1)))


def test_client_streams_differ_per_round_and_client():
    keys = [(r, c) for r in range(1, 6) for c in range(10)]
    draws = {tuple(_draw(client_rng(0, r, c))) for r, c in keys}
    assert len(draws) == len(keys)
    # Neither (round, client) order is confused: (1, 2) != (2, 1).
    assert not np.array_equal(_draw(client_rng(0, 1, 2)), _draw(client_rng(0, 2, 1)))
    assert not np.array_equal(_draw(client_rng(0, 1, 2)), _draw(client_rng(1, 1, 2)))


def test_purposes_do_not_share_streams():
    # Sampling round r and a client's stream, and the partition stream, are all different.
    a = _draw(sampling_rng(0, 0))
    b = _draw(client_rng(0, 0, 0))
    c = _draw(partition_rng(0))
    assert not np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(b, c)


@pytest.fixture
def params():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=g), "b": torch.randn(3, generator=g)}


def test_num_parameters(params):
    assert P.num_parameters(params) == 15
    assert P.num_parameters({}) == 0


def test_stack_unstack_roundtrip(params):
    stacked = P.stack(params, 5)
    assert stacked["w"].shape == (5, 3, 4) and stacked["b"].shape == (5, 3)
    for i in range(5):
        back = P.unstack(stacked, i)
        assert set(back) == set(params)
        for k in params:
            assert torch.equal(back[k], params[k])
    # The stack is a copy: writing to it leaves the source alone, and copies are independent.
    stacked["w"][0].add_(1.0)
    assert torch.equal(P.unstack(stacked, 1)["w"], params["w"])
    assert not torch.equal(P.unstack(stacked, 0)["w"], params["w"])


def test_stack_detaches(params):
    p = {k: v.clone().requires_grad_() for k, v in params.items()}
    stacked = P.stack(p, 2)
    assert not any(v.requires_grad for v in stacked.values())


def test_sub_and_max_abs_diff(params):
    other = {k: v + 0.5 for k, v in params.items()}
    other["b"][1] += 2.0
    d = P.sub(other, params)
    assert set(d) == {"w", "b"}
    assert torch.allclose(d["w"], torch.full((3, 4), 0.5))
    assert torch.allclose(d["b"], torch.tensor([0.5, 2.5, 0.5]))
    assert P.max_abs_diff(other, params) == pytest.approx(2.5)
    assert P.max_abs_diff(params, params) == 0.0


def test_clone_is_detached_copy(params):
    src = {k: v.clone().requires_grad_() for k, v in params.items()}
    c = P.clone(src)
    assert not any(v.requires_grad for v in c.values())
    with torch.no_grad():
        src["w"].add_(1.0)
    assert torch.equal(c["w"], params["w"])
