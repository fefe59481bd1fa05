"""What the server can check of an encrypted sum: a CKKS report under another key is refused on arrival by
its key fingerprint, and a sum that no cohort of its total weight within ``bound`` could make (a device
that encrypted a value beyond the bound, garbage, or a forged fingerprint) is refused at decryption with
a ProtocolError naming the value and the limit, instead of reaching the model."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ProtocolError
from hamrah.he import HEPayload, HESettings, HomomorphicSum, KeyHolder, Packing
from hamrah.he.ckks import ckks_add, ckks_fingerprint
from hamrah.he.paillier import EncryptedVector, _encrypt_ints

SPEC = (("w", (5,)), ("b", (3,)))
PAILLIER = HESettings("paillier", key_bits=1024, precision_bits=16, bound=1.0, max_weight=8)
CKKS = HESettings("ckks", poly_modulus_degree=4096, bound=1.0, max_weight=8)


def _update(seed: int = 0, scale: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": (torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1) * scale,
        "b": torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64) * scale,
    }


def _encode(stage: HomomorphicSum, update: dict) -> bytes:
    return stage.encode(update, None, None)[0].to_bytes()


@pytest.fixture(scope="module")
def paillier_holder():
    return KeyHolder.generate(PAILLIER, np.random.default_rng(5))


@pytest.fixture(scope="module")
def ckks_holders():
    return KeyHolder.generate(CKKS), KeyHolder.generate(CKKS)  # same parameters, different keys


# ---- Paillier: slots beyond what the total weight allows, bits beyond the last slot ----


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_packed_sum_is_refused_exactly_when_no_cohort_of_its_weight_makes_it(data):
    """Any slot in [0, count * 2 * offset] decodes; any slot above it, or any bit above the last slot, is
    refused naming the value (it used to decode silently to a wrong value, or carry into a neighbour)."""
    max_clients = data.draw(st.integers(1, 8))
    p = Packing(512, data.draw(st.integers(1, 12)), data.draw(st.sampled_from([0.5, 1.0, 3.0])), max_clients)
    count = data.draw(st.integers(1, max_clients))
    length = data.draw(st.integers(1, 2 * p.slots + 1))
    top = count * 2 * p.offset
    raw = data.draw(st.lists(st.integers(0, top), min_size=length, max_size=length))
    plains = [
        sum(v << (j * p.slot_bits) for j, v in enumerate(raw[s : s + p.slots])) for s in range(0, length, p.slots)
    ]
    assert p.unpack_ints(plains, length, count) == [v - count * p.offset for v in raw]
    how = data.draw(st.sampled_from(["slot", "beyond"]))
    i = data.draw(st.integers(0, length - 1))
    k, j = divmod(i, p.slots)
    bad = list(plains)
    if how == "slot":
        v = data.draw(st.integers(top + 1, 2**p.slot_bits - 1)) if top + 1 < 2**p.slot_bits else None
        if v is None:  # the slot is exactly full: nothing above the limit fits in it
            return
        bad[k] += (v - raw[i]) << (j * p.slot_bits)
        match = f"value {i} sums to {v - count * p.offset} / 2\\^{p.precision_bits}"
    else:
        used = min(p.slots, length - k * p.slots)
        bad[k] += 1 << (used * p.slot_bits + data.draw(st.integers(0, 64)))
        match = f"plaintext {k} holds \\d+ bits beyond its last value"
    with pytest.raises(ProtocolError, match=match + ".*expected each value within"):
        p.unpack_ints(bad, length, count)


def _crafted_paillier(stage: HomomorphicSum, plaintexts: list[int]) -> bytes:
    """A hostile device's payload: any plaintexts it likes, encrypted under the round's key (a valid unit)."""
    pk = stage.public
    c = EncryptedVector(
        pk, _encrypt_ints(pk, plaintexts, None), 8, stage.scheme.packing.precision_bits, stage.scheme.packing
    )
    return HEPayload(SPEC, stage.scheme, pk, parsed=c).to_bytes()


def test_a_paillier_value_beyond_the_bound_is_refused_at_decryption(paillier_holder):
    stage = HomomorphicSum(PAILLIER, paillier_holder.public_bytes, paillier_holder)
    p = stage.scheme.packing
    honest = stage.read(_encode(stage, _update()), SPEC)
    # slot 2 at half the slot's range (a value of about 2^(slot_bits - 1 - f), far beyond bound = 1)
    zeros = p.pack(np.zeros(8))[0]
    crafted = zeros + ((2 ** (p.slot_bits - 1) - p.offset) << 2 * p.slot_bits)
    beyond = stage.read(_crafted_paillier(stage, [crafted]), SPEC)
    with pytest.raises(
        ProtocolError, match=r"he_sum: the decrypted sum \(total weight 2\) is refused: packed sum: value 2 sums to"
    ):
        stage.decrypt(stage.weighted_sum([honest, beyond], [1, 1]), SPEC)
    garbage = stage.read(_crafted_paillier(stage, [int(stage.public.n) // 3]), SPEC)  # a random-looking plaintext
    with pytest.raises(ProtocolError, match="packed sum: value 0 sums to .*expected each value within"):
        stage.decrypt(stage.weighted_sum([honest, garbage], [1, 1]), SPEC)
    above = stage.read(_crafted_paillier(stage, [zeros + (1 << (8 * p.slot_bits + 5))]), SPEC)  # past the 8 values
    with pytest.raises(ProtocolError, match="packed sum: plaintext 0 holds 6 bits beyond its last value"):
        stage.decrypt(stage.weighted_sum([honest, above], [1, 1]), SPEC)
    total = stage.decrypt(stage.weighted_sum([honest, honest], [3, 5]), SPEC)  # honest sums still decode
    assert torch.allclose(total["b"], torch.tensor([8.0, -8.0, 0.0], dtype=torch.float64))


def test_a_paillier_report_under_another_key_is_refused_naming_both_keys(paillier_holder):
    from hamrah.he.paillier_codec import fingerprint

    stage = HomomorphicSum(PAILLIER, paillier_holder.public_bytes, paillier_holder)
    stale = KeyHolder.generate(PAILLIER, np.random.default_rng(6))
    device = HomomorphicSum(PAILLIER, stale.public_bytes)
    theirs, ours = fingerprint(device.public).hex(), fingerprint(stage.public).hex()
    with pytest.raises(ProtocolError, match=f"public key \\(fingerprint {theirs}\\); expected this key's {ours}"):
        stage.read(_encode(device, _update()), SPEC)


# ---- CKKS: the key fingerprint on arrival, the range of the sum at decryption ----


def test_a_ckks_report_under_another_key_is_refused_on_arrival_naming_both_keys(ckks_holders):
    holder, stale = ckks_holders
    stage = HomomorphicSum(CKKS, holder.public_bytes, holder)
    device = HomomorphicSum(CKKS, stale.public_bytes)  # an honest device with last run's key
    ours, theirs = ckks_fingerprint(stage.public).hex(), ckks_fingerprint(device.public).hex()
    assert ours != theirs
    with pytest.raises(ProtocolError, match=f"encrypted under public key {theirs}, expected this round's key {ours}"):
        stage.read(_encode(device, _update()), SPEC)
    assert stage.read(_encode(HomomorphicSum(CKKS, holder.public_bytes), _update()), SPEC).ciphertext.count == 1
    a = stage.read(_encode(stage, _update()), SPEC).ciphertext
    b = device.read(_encode(device, _update()), SPEC).ciphertext
    with pytest.raises(ProtocolError, match="encrypted under different public keys"):
        ckks_add(a, b, stage.scheme.config)


def test_the_fingerprint_less_ckks_format_is_refused_by_name(ckks_holders):
    stage = HomomorphicSum(CKKS, ckks_holders[0].public_bytes, ckks_holders[0])
    data = _encode(stage, _update())
    at = data.index(b"HCV2")
    old = data[:at] + b"HCV1" + data[at + 4 : at + 4 + 16] + data[at + 4 + 24 :]  # the v1 header: no fingerprint
    with pytest.raises(ProtocolError, match="format b'HCV1' carries no key fingerprint; expected b'HCV2'"):
        stage.read(old, SPEC)


def _forged(data: bytes, fingerprint: bytes) -> bytes:
    at = data.index(b"HCV2") + 4 + struct.calcsize(">QII")
    return data[:at] + fingerprint + data[at + 8 :]


def test_a_forged_fingerprint_parses_and_its_sum_is_refused_at_decryption(ckks_holders):
    """A lying device encrypts under another key and writes this round's fingerprint: nothing on arrival
    can tell, the sum decrypts to noise of about q / scale, and the range check refuses it by name."""
    holder, other = ckks_holders
    stage = HomomorphicSum(CKKS, holder.public_bytes, holder)
    liar = _forged(_encode(HomomorphicSum(CKKS, other.public_bytes), _update()), ckks_fingerprint(stage.public))
    forged = stage.read(liar, SPEC)  # parses: the fingerprint is not a proof
    honest = stage.read(_encode(stage, _update(1)), SPEC)
    with pytest.raises(ProtocolError, match=r"refused: CKKS sum: value \d+ decrypts to .*expected \|value\| <= 2"):
        stage.decrypt(stage.weighted_sum([honest, forged], [1, 1]), SPEC)


def test_a_ckks_sum_at_the_bound_is_not_refused(ckks_holders):
    """No false alarm: updates at +-bound weighted up to max_weight decode (the limit allows the error of
    doubling-and-adding), and a device beyond the bound is clipped on honest devices."""
    holder = ckks_holders[0]
    stage = HomomorphicSum(CKKS, holder.public_bytes, holder)
    edge = {"w": torch.ones(5, dtype=torch.float64), "b": -torch.ones(3, dtype=torch.float64)}
    total = stage.decrypt(stage.weighted_sum([stage.read(_encode(stage, edge), SPEC)], [8]), SPEC)
    assert torch.allclose(total["w"], torch.full((5,), 8.0, dtype=torch.float64), atol=1e-3)
    big = stage.read(_encode(stage, _update(scale=50.0)), SPEC)  # clipped to the bound by the stage
    total = stage.decrypt(stage.weighted_sum([big, big], [3, 5]), SPEC)
    assert float(total["b"].abs().max()) <= 8.0 + 1e-3
