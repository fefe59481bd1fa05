"""Homomorphic encryption over the real server: devices encrypt their update under the public key the
plan carries, the server adds ciphertexts weighted by n_k without the secret key, the key holder decrypts
only the sum; the committed model equals a plain FedAvg run within fixed-point precision."""

from __future__ import annotations

import asyncio

import pytest
import torch
from tests.system.harness import make_setup, records, run_system

from hamrah.core.errors import ProtocolError
from hamrah.experiments.config import from_dict
from hamrah.server.pipeline import CIPHERTEXT_KEY, ServerPipeline
from hamrah.transport.codec import encode_params


def _experiment(he=None, rounds=2):
    raw = {
        "data": {"dataset": "mnist", "partition": "unbalanced", "num_clients": 20, "sigma": 1.0},
        "model": {"name": "logreg"},
        "algorithm": {"name": "fedavg", "client_fraction": 0.2, "local_epochs": 1, "batch_size": 50, "lr": 0.1},
        "run": {"rounds": rounds, "seed": 0},
    }
    if he is not None:
        raw["homomorphic_encryption"] = he
    return from_dict(raw)


def _serve(tmp_path, exp, name):
    # every device takes part in every round (devices = goal), so both runs train the same clients
    setup, stores, tokens = make_setup(tmp_path / name, exp, devices=4, goal_count=4, over_selection=1.0, min_reports=4)
    state = tmp_path / name / "state"
    server, summary, _ = asyncio.run(run_system(setup, state, stores, tokens))
    return server, records(state, setup)


def test_paillier_fedavg_over_grpc_equals_a_plain_run(tmp_path):
    he_server, he_records = _serve(tmp_path, _experiment({"scheme": "paillier", "key_bits": 1024, "bound": 4.0}), "he")
    plain_server, _ = _serve(tmp_path, _experiment(), "plain")
    assert [r["round"] for r in he_records] == [1, 2]
    assert all(r["reported"] == 4 for r in he_records)
    pipeline = he_server.coordinator.pipeline
    assert pipeline.buffered and pipeline.run.key_holder.decryptions == 2  # one decryption per round: the sum
    a, b = he_server.coordinator.params, plain_server.coordinator.params
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-5  # fixed-point precision 2^-25 per client, n_k-weighted mean
    start = he_server.coordinator._initial_params()
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    assert moved > 1e-3
    # the ciphertext is what went up: 4 clients x ~357 ciphertexts of 256 bytes, more than float32's 31,400
    assert all(r["bytes_up"] > 4 * 4 * 7850 for r in he_records)


def test_a_malformed_or_wrong_size_ciphertext_is_refused(tmp_path):
    exp = _experiment({"scheme": "paillier", "key_bits": 1024})
    setup, _, _ = make_setup(tmp_path, exp, devices=0, goal_count=4)
    params = {"weight": torch.zeros(10, 784), "bias": torch.zeros(10)}
    pipe = ServerPipeline.from_config(setup.config, params, setup.goal, tmp_path, "fedavg")
    from hamrah.device.pipeline import encode_update

    good = encode_update(pipe.plan_extra(), {"delta/" + k: v + 0.01 for k, v in params.items()}, 1, 1, {})
    r = pipe.decode_result(1, good, 100, {})
    assert r.weight == 100 and set(r.stats) == {CIPHERTEXT_KEY}
    assert pipe.ciphertext(r).to_bytes() == good  # parsed once on arrival; the report's bytes are the chain's
    with pytest.raises(ProtocolError, match="malformed ciphertext .*expected a paillier ciphertext of 7850 values"):
        pipe.decode_result(1, good[:-256], 100, {})  # one ciphertext short
    flipped = bytearray(good)
    flipped[-1] ^= 1
    tampered_header = bytearray(good)
    tampered_header[8] ^= 0xFF  # the spec's name count
    with pytest.raises(ProtocolError):
        pipe.decode_result(1, bytes(tampered_header), 100, {})
    with pytest.raises(ProtocolError):  # a safetensors file (the old double envelope) is not a payload
        pipe.decode_result(
            1, encode_params({"pipeline/payload": torch.frombuffer(bytearray(good), dtype=torch.uint8)}), 100, {}
        )
    pipe.decode_result(1, bytes(flipped), 100, {})  # a changed ciphertext still parses: it is only garbage
    with pytest.raises(ProtocolError, match="past homomorphic_encryption.max_weight"):
        pipe.decode_result(1, good, 2**20, {})


def test_a_ckks_ciphertext_at_another_scale_is_refused_and_the_round_commits(tmp_path, monkeypatch, caplog):
    """A hostile device encrypts under the round's public key but at scale 2^30 instead of 2^40: such a
    ciphertext parses, and the server's homomorphic sum would fail at commit ("scale mismatch"). It is
    refused when it arrives, naming what was wrong; the honest devices' round commits."""
    import hamrah.device.compute as compute
    from hamrah.device.pipeline import plan_pipeline

    honest_encode = compute.encode_update
    hostile_key = 3

    def encode(extra, update, client_key, round_idx, states):
        if client_key != hostile_key:
            return honest_encode(extra, update, client_key, round_idx, states)
        public = plan_pipeline(extra)[1].stages[-1].public  # the chain's (shared) public context
        scale = public.global_scale
        public.global_scale = 2.0**30
        try:
            return honest_encode(extra, update, client_key, round_idx, states)
        finally:
            public.global_scale = scale

    monkeypatch.setattr(compute, "encode_update", encode)
    exp = _experiment({"scheme": "ckks"}, rounds=1)
    setup, stores, tokens = make_setup(
        tmp_path, exp, devices=4, goal_count=4, over_selection=1.0, min_reports=3, reporting_timeout_s=15.0
    )
    state = tmp_path / "state"
    with caplog.at_level("INFO", logger="hamrah"):
        server, summary, _ = asyncio.run(run_system(setup, state, stores, tokens))
    (rec,) = records(state, setup)
    assert summary["rounds_committed"] == 1 and rec["reported"] == 3
    assert all(bool(torch.isfinite(v).all()) for v in server.coordinator.params.values())
    refused = [r.getMessage() for r in caplog.records if "refused an update from device device-3" in r.getMessage()]
    assert refused and "has scale 2^30" in refused[0] and "expected a fresh encryption: scale 2^" in refused[0]
    assert summary["refusals"] == {"ProtocolError: he_sum": 1}


def _pipeline(tmp_path, he):
    setup, _, _ = make_setup(tmp_path, _experiment(he), devices=0, goal_count=4)
    params = {"weight": torch.zeros(10, 784), "bias": torch.zeros(10)}
    return ServerPipeline.from_config(setup.config, params, setup.goal, tmp_path, "fedavg"), params


def test_each_he_report_is_parsed_once_and_summed_at_commit(tmp_path, monkeypatch):
    """The server parses and checks a report's ciphertext when it arrives and adds that parsed ciphertext
    at commit (it used to parse every report a second time at commit)."""
    from hamrah.device.pipeline import encode_update

    pipe, params = _pipeline(tmp_path, {"scheme": "paillier", "key_bits": 1024})
    scheme = pipe.he.scheme
    parse, parsed = scheme.ciphertext_from_bytes, []
    monkeypatch.setattr(scheme, "ciphertext_from_bytes", lambda pub, data: parsed.append(1) or parse(pub, data))
    pipe.start_round(0)
    updates = [{k: v + 0.01 * (i + 1) for k, v in params.items()} for i in range(3)]
    weights = [100, 250, 50]
    reports = [
        pipe.decode_result(
            i, encode_update(pipe.plan_extra(), {"delta/" + k: v for k, v in u.items()}, i, 0, {}), w, {}
        )
        for i, (u, w) in enumerate(zip(updates, weights))
    ]
    out = pipe.server_half(None, reports, 0, 3)
    assert len(parsed) == 3  # once per report
    want = sum(w * 0.01 * (i + 1) for i, w in enumerate(weights)) / sum(weights)
    assert out.weight == 400 and abs(float(out.sums["delta/bias"][0]) / 400 - want) < 1e-6


def test_a_ckks_device_on_another_key_is_refused_and_a_forged_fingerprint_fails_the_sum_by_name(tmp_path):
    """An honest device with a stale CKKS key is refused on arrival, naming both fingerprints; a lying
    device that writes this round's fingerprint over another key's ciphertext parses, and the round's sum
    decrypts out of range: the commit is refused with a ProtocolError naming the value and the limit."""
    from hamrah.device.pipeline import encode_update
    from hamrah.he.ckks import ckks_fingerprint

    pipe, params = _pipeline(tmp_path / "now", {"scheme": "ckks"})
    stale, _ = _pipeline(tmp_path / "before", {"scheme": "ckks"})  # same parameters, another key pair
    update = {"delta/" + k: v + 0.01 for k, v in params.items()}
    honest = encode_update(pipe.plan_extra(), update, 1, 0, {})
    old = encode_update(stale.plan_extra(), update, 2, 0, {})
    ours, theirs = ckks_fingerprint(pipe.he.public), ckks_fingerprint(stale.he.public)
    pipe.start_round(0)
    with pytest.raises(ProtocolError, match=f"encrypted under public key {theirs.hex()}, expected this round's key"):
        pipe.decode_result(2, old, 100, {})
    at = old.index(b"HCV2") + 4 + 16
    forged = old[:at] + ours + old[at + 8 :]
    reports = [pipe.decode_result(1, honest, 100, {}), pipe.decode_result(2, forged, 100, {})]
    with pytest.raises(ProtocolError, match=r"he_sum: the decrypted sum \(total weight 200\) is refused: CKKS sum"):
        pipe.server_half(None, reports, 0, 2)
    assert pipe.server_half(None, reports[:1], 0, 1).weight == 100  # without the liar the sum decrypts
