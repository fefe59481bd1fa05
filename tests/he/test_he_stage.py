"""HomomorphicSum as a pipeline stage: the decrypted mean equals the plain weighted mean (Paillier exactly
up to fixed point, CKKS within its error bound), the server's n_k weighting under encryption, exact bytes,
the key holder as the only decrypter, malformed payloads, and the chains that are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hamrah.core.errors import ConfigError, ProtocolError
from hamrah.core.pipeline import Chain, process_round, wire_spec
from hamrah.he import (
    CKKSConfig,
    HESettings,
    HomomorphicSum,
    KeyHolder,
    PaillierConfig,
    PaillierScheme,
    ckks_scale,
    encrypt_packed,
    paillier_keygen,
    scale_packed,
)
from hamrah.he.ckks import ckks_decrypt, ckks_encrypt, ckks_keygen
from hamrah.he.paillier import decrypt_ints
from hamrah.pipeline import PipelineRun, resolve_pipeline

PAILLIER = HESettings("paillier", key_bits=1024, max_weight=64)
CKKS = HESettings("ckks", max_weight=64)


@pytest.fixture(scope="module")
def holders():
    return {"paillier": KeyHolder.generate(PAILLIER, np.random.default_rng(5)), "ckks": KeyHolder.generate(CKKS)}


def _stage(holder, with_key_holder=True):
    return HomomorphicSum(holder.settings, holder.public_bytes, holder if with_key_holder else None)


def _updates(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    # small enough that p_k * m * x (the simulator's weighting, up to 1.9 here) stays within the bound 1
    return {k: {"w": torch.randn(20, 9, generator=g) * 0.1, "b": torch.randn(9, generator=g) * 0.1} for k in range(n)}


def _mean(ups, weights):
    total = sum(weights.values())
    return {n: sum(ups[k][n].double() * weights[k] for k in ups) / total for n in ups[0]}


def _max_diff(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in b)


@pytest.mark.parametrize("scheme,tol", [("paillier", 3 * 2.0**-25), ("ckks", 2e-7)])
def test_the_decrypted_mean_equals_the_plain_weighted_mean(holders, scheme, tol):
    ups, weights = _updates(), {0: 1.0, 1: 2.0, 2: 5.0}
    out = process_round(Chain([_stage(holders[scheme])]), ups, weights, {}, {k: np.random.default_rng(k) for k in ups})
    assert _max_diff(out.aggregate, _mean(ups, weights)) < tol
    assert holders[scheme].decryptions >= 1


def test_bytes_up_are_the_ciphertext_bytes_and_down_carries_the_public_key(holders):
    stage, ups = _stage(holders["paillier"]), _updates()
    out = process_round(Chain([stage]), ups, {k: 1.0 for k in ups}, {}, {k: np.random.default_rng(k) for k in ups})
    payload, _ = stage.encode(ups[0], None, None)
    data = payload.to_bytes()
    assert payload.nbytes == len(data) == out.bytes.up[0]
    slots = PaillierScheme(PaillierConfig(1024, 24, 1.0, 64)).packing.slots
    n_ct = -(-189 // slots)
    assert len(data) > n_ct * 256 > 4 * 189 / 2  # the ciphertexts (n^2 = 2048 bits each) travel, not floats
    model = 4 * 189 + 4 + 4 + 2 + (2 + 1 + 1 + 8) + (2 + 1 + 1 + 4)  # the float32 broadcast of w[20, 9] and b[9]
    assert out.bytes.down[0] == model + len(holders["paillier"].public_bytes)


@pytest.mark.parametrize("scheme,tol", [("paillier", 3 * 2.0**-25), ("ckks", 2e-6)])
def test_the_server_weights_ciphertexts_by_n_k_without_the_secret_key(holders, scheme, tol):
    stage, ups = _stage(holders[scheme], with_key_holder=False), _updates()
    spec = wire_spec(Chain([stage]), ups[0])
    weights = [3, 1, 20]
    parsed = [stage.read(stage.encode(ups[k], None, None)[0].to_bytes(), spec) for k in ups]  # the server's view
    total = stage.weighted_sum(parsed, weights)
    with pytest.raises(ConfigError, match="no key holder on this side"):
        stage.decrypt(total, spec)
    summed = _stage(holders[scheme]).decrypt(total, spec)  # the key holder decrypts only the sum
    mean = {k: v / sum(weights) for k, v in summed.items()}
    assert _max_diff(mean, _mean(ups, dict(enumerate(weights)))) < tol
    with pytest.raises(ConfigError, match="exceeds homomorphic_encryption.max_weight = 64"):
        stage.weighted_sum(parsed, [30, 30, 5])


def test_scale_packed_multiplies_every_slot_exactly_and_respects_the_headroom():
    pub, sec = paillier_keygen(1024, np.random.default_rng(3))
    packing = PaillierConfig(1024, 20, 1.0, 10).packing
    x = np.array([0.5, -0.25, 1.0, -1.0, 0.0])
    c = scale_packed(encrypt_packed(pub, x, packing, np.random.default_rng(0)), 7)
    assert c.count == 7 and decrypt_ints(sec, c) == [round(v * 2**20) * 7 for v in x]
    with pytest.raises(ConfigError, match="max_clients >= 14"):
        scale_packed(c, 2)
    with pytest.raises(ConfigError, match="positive integer"):
        scale_packed(c, 0)


def test_ckks_scale_doubles_and_adds_without_a_new_level():
    config = CKKSConfig(max_clients=100, scale_bits=30)
    public, secret = ckks_keygen(config)
    x = np.array([0.5, -0.25, 1.0])
    for k in (1, 2, 13, 64):
        c = ckks_scale(ckks_encrypt(public, x, config), k, config)
        assert c.count == k and np.allclose(ckks_decrypt(secret, c), k * x, atol=k * config.error_bound(1))
    with pytest.raises(ConfigError, match="more than max_clients=100"):
        ckks_scale(ckks_encrypt(public, x, config), 101, config)


def test_coordinates_beyond_the_bound_are_clipped(holders):
    stage = _stage(holders["paillier"])
    out = process_round(
        Chain([stage]), {0: {"w": torch.tensor([3.0, -0.5, -7.0])}}, {0: 1.0}, {}, {0: np.random.default_rng(0)}
    )
    assert torch.allclose(out.aggregate["w"], torch.tensor([1.0, -0.5, -1.0]), atol=1e-7)


def test_malformed_payloads_are_refused_naming_what_was_expected(holders):
    stage, ups = _stage(holders["paillier"]), _updates()
    spec = wire_spec(Chain([stage]), ups[0])
    data = stage.encode(ups[0], None, None)[0].to_bytes()
    with pytest.raises(ProtocolError, match="expected a paillier ciphertext of 189 values in 7 ciphertexts"):
        stage.read(data[:-10], spec)
    with pytest.raises(ProtocolError, match="names/shapes"):
        stage.read(data, (("w", (20, 9)), ("b", (8,))))
    with pytest.raises(ProtocolError, match="codec tag"):
        _stage(holders["ckks"]).read(data, spec)
    other = KeyHolder.generate(PAILLIER, np.random.default_rng(77))
    with pytest.raises(ProtocolError, match="different public key"):
        _stage(other).read(data, spec)
    parsed = stage.read(data, spec)
    with pytest.raises(ProtocolError, match="cannot be decoded without the secret key"):
        stage.decode(parsed)
    # a client cannot send a sum of several (its count would shift every slot's offset)
    two = stage.scheme.ciphertext_to_bytes(stage.scheme.add(parsed.ciphertext, parsed.ciphertext))
    with pytest.raises(ProtocolError, match="summing 2 clients"):
        stage.read(data[: data.index(b"HPV1")] + two, spec)


def test_an_empty_round_still_runs_the_server_halves(holders):
    chain = Chain([_stage(holders["ckks"])])
    out = process_round(chain, {}, {}, {}, {}, template={"w": torch.zeros(4)})
    assert torch.equal(out.aggregate["w"], torch.zeros(4))


def _resolve(**sections):
    return resolve_pipeline(
        sections.get("compression"),
        sections.get("privacy"),
        100,
        10,
        5,
        sections.get("secure"),
        sections.get("he", {"scheme": "paillier", "key_bits": 1024}),
    )


@pytest.mark.parametrize(
    "codec", [{"codec": "topk"}, {"codec": "sign"}, {"codec": "mask"}, {"codec": "quantize", "bits": 8}]
)
def test_a_codec_whose_payload_cannot_be_summed_under_encryption_is_refused(codec):
    with pytest.raises(
        ConfigError, match=f"compression.codec = '{codec['codec']}' before \\[homomorphic_encryption\\]"
    ):
        _resolve(compression=codec)


def test_refused_and_accepted_chains():
    with pytest.raises(ConfigError, match="with \\[secure_aggregation\\].*expected one of the two"):
        _resolve(secure={"variant": "secagg"})
    with pytest.raises(ConfigError, match="scheme 'ckks' does not use it"):
        _resolve(he={"scheme": "ckks", "key_bits": 2048})
    with pytest.raises(ConfigError, match="homomorphic_encryption.scheme = 'rsa'"):
        _resolve(he={"scheme": "rsa"})
    with pytest.raises(ConfigError, match="key_bits = 1001: expected an even integer >= 512"):
        _resolve(he={"key_bits": 1001})
    ring = _resolve(compression={"codec": "quantize", "bits": 8, "scheme": "ring", "range": 1.0})
    assert ring.chain().names == ("quantize", "he_sum")
    local = _resolve(privacy={"mode": "local", "clip": 1.0, "noise_multiplier": 1.0})
    assert local.chain().names == ("local_dp", "he_sum")
    central = _resolve(privacy={"mode": "central", "clip": 1.0, "noise_multiplier": 1.0, "sampling": "fixed"})
    assert central.chain().names == ("dp_clip", "he_sum", "dp_noise")  # noise after decryption
    assert central.homomorphic.max_weight == 2 * 10 + 16  # equal weights: clients; else examples
    assert _resolve().homomorphic.max_weight == 2**20


def test_the_spec_carries_only_the_public_key_and_rebuilds_on_a_device():
    spec = _resolve()
    run = PipelineRun(
        spec, {"w": torch.zeros(3)}, key_holder=KeyHolder.generate(spec.homomorphic, np.random.default_rng(1))
    )
    d = json.loads(json.dumps(run.spec.to_json()))
    assert set(d["homomorphic"]) == set(HESettings().to_dict()) and isinstance(d["public_key"], str)
    assert run.spec.public_key == run.key_holder.public_bytes
    device = type(spec).from_json(d).chain()
    assert device.stages[-1].key_holder is None and device.stages[-1].public_key == run.key_holder.public_bytes
    with pytest.raises(ConfigError, match="no public key"):
        spec.chain().stages[-1].encode({"w": torch.zeros(3)}, None, None)


def test_the_simulator_runs_ckks_and_matches_a_plain_run():
    from hamrah.experiments.config import from_dict, pipeline_spec
    from hamrah.experiments.runner import prepare
    from hamrah.simulation import SimulationConfig, Simulator, seeded

    raw = {
        "data": {"dataset": "mnist", "partition": "unbalanced", "num_clients": 20},
        "model": {"name": "logreg"},
        "algorithm": {"name": "fedavg", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
        "run": {"rounds": 1, "seed": 0},
    }
    results = []
    for he in (None, {"scheme": "ckks", "bound": 4.0}):
        cfg = from_dict({**raw, "homomorphic_encryption": he} if he else raw)
        prep = prepare(cfg)
        sim = Simulator(
            seeded(prep.model_factory, 0),
            prep.data,
            prep.algorithm,
            SimulationConfig(rounds=1, seed=0, batched=False, workers=1),
            pipeline=pipeline_spec(cfg, 20),
        )
        results.append(sim.run())
    assert results[1].history[-1].bytes_up > 4 * 4 * 7850  # ciphertexts were sent
    assert _max_diff(results[1].params, results[0].params) < 1e-5
