"""One interface for both schemes: an end-to-end aggregation of model updates, roles kept apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hamrah import he
from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.he import (
    CKKSConfig,
    CKKSScheme,
    PaillierConfig,
    PaillierScheme,
    ParamsLayout,
    flatten_params,
    unflatten_params,
)

SCHEMES = {
    "paillier": lambda: PaillierScheme(PaillierConfig(key_bits=1024, precision_bits=20, bound=1.0, max_clients=5)),
    "ckks": lambda: CKKSScheme(CKKSConfig(4096, (40, 40), 25, 1.0, 5)),
}


def _updates(n: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        {"fc.weight": torch.rand(4, 3, generator=gen) - 0.5, "fc.bias": torch.rand(4, generator=gen) - 0.5}
        for _ in range(n)
    ]


@pytest.mark.parametrize("name", SCHEMES)
def test_encrypted_aggregation_of_params_equals_the_plain_sum(name):
    scheme = SCHEMES[name]()
    keys = scheme.keygen(np.random.default_rng(0))  # key holder
    public_bytes = scheme.public_to_bytes(keys.public)  # sent to clients and server
    client_pub = scheme.public_from_bytes(public_bytes)
    updates = _updates(5)
    layout = ParamsLayout.of(updates[0])
    uploads = [scheme.ciphertext_to_bytes(scheme.encrypt(client_pub, layout.flatten(u))) for u in updates]
    server_pub = scheme.public_from_bytes(public_bytes)  # the server never sees keys.secret
    aggregate = scheme.sum([scheme.ciphertext_from_bytes(server_pub, b) for b in uploads])
    result = unflatten_params(scheme.decrypt_sum(keys.secret, aggregate), layout)
    tol = 5 * 2.0**-20 if name == "paillier" else scheme.config.error_bound(5)
    for k in layout.names:
        expected = sum(u[k].double() for u in updates).float()
        assert result[k].dtype == torch.float32 and result[k].shape == expected.shape
        assert (result[k] - expected).abs().max() <= tol + 1e-7  # + float32 rounding of the result


@pytest.mark.parametrize("name", SCHEMES)
def test_decrypting_with_the_public_part_is_refused(name):
    scheme = SCHEMES[name]()
    keys = scheme.keygen(np.random.default_rng(0))
    c = scheme.encrypt(keys.public, [0.25])
    with pytest.raises(ProtocolError):
        scheme.decrypt_sum(keys.public, c)
    with pytest.raises(ProtocolError, match="at least one"):
        scheme.sum([])


def test_paillier_scheme_checks_the_headroom_when_configured():
    with pytest.raises(ConfigError, match="does not fit"):
        PaillierScheme(PaillierConfig(key_bits=512, precision_bits=52, bound=2.0**-2, max_clients=2**470))


def test_paillier_scheme_refuses_a_vector_packed_differently():
    a = PaillierScheme(PaillierConfig(key_bits=1024, max_clients=5))
    b = PaillierScheme(PaillierConfig(key_bits=1024, max_clients=9))
    keys = a.keygen(np.random.default_rng(0))
    data = a.ciphertext_to_bytes(a.encrypt(keys.public, [0.5]))
    with pytest.raises(ProtocolError, match="packed as"):
        b.ciphertext_from_bytes(keys.public, data)


def test_flatten_and_unflatten_round_trip_names_shapes_dtypes():
    params = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1.5], dtype=torch.float64)}
    vec, layout = flatten_params(params)
    assert vec.tolist() == [0, 1, 2, 3, 4, 5, 1.5] and layout.size == 7
    back = unflatten_params(vec, layout)
    assert list(back) == ["a", "b"] and back["b"].dtype == torch.float64
    assert all(torch.equal(back[k], params[k]) for k in params)


def test_layout_refuses_mismatches():
    layout = ParamsLayout.of({"a": torch.zeros(2, 3)})
    with pytest.raises(ProtocolError, match="expected names"):
        layout.flatten({"b": torch.zeros(2, 3)})
    with pytest.raises(ProtocolError, match=r"expected shape \(2, 3\)"):
        layout.flatten({"a": torch.zeros(3, 2)})
    with pytest.raises(ProtocolError, match="expected 6 values"):
        layout.unflatten(np.zeros(5))


def test_public_api_is_importable():
    assert len(he.__all__) == len(set(he.__all__))
    for name in he.__all__:
        assert hasattr(he, name), name
