"""Device identity: signatures, replay protection, the server's registry, private files."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import AuthError, ConfigError
from hamrah.device.fleet import make_tokens
from hamrah.transport.backoff import jittered
from hamrah.transport.identity import (
    KEY_HEADER,
    NONCE_HEADER,
    SIG_HEADER,
    TS_HEADER,
    DeviceKey,
    NonceCache,
    RequestRefused,
    RequestSigner,
    anonymous_key,
    check_request,
    token_digest,
    verify_signature,
    write_private,
)
from hamrah.transport.security import TokenRegistry

KEYS = [DeviceKey.generate() for _ in range(3)]  # key generation is cheap, but keep examples fast


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _registry(tmp_path, tokens: list[str], keys: list[DeviceKey], revoked: list[str] = ()) -> TokenRegistry:
    devices = [
        {
            "name": f"device-{i:04d}",
            "token_sha256": token_digest(t),
            "signing_key": base64.b64encode(k.public_bytes).decode(),
        }
        for i, (t, k) in enumerate(zip(tokens, keys))
    ]
    write_private(tmp_path / "devices.json", json.dumps({"version": 1, "devices": devices}).encode())
    (tmp_path / "revoked.txt").write_text("".join(r + "\n" for r in revoked))
    return TokenRegistry(tmp_path / "devices.json", tmp_path / "revoked.txt", recheck_s=0.0)


@settings(max_examples=40, deadline=None)
@given(purpose=st.text(min_size=1, max_size=20), data=st.binary(max_size=300), other=st.binary(max_size=300))
def test_a_signature_verifies_only_for_its_key_purpose_and_data(purpose, data, other):
    sig = KEYS[0].sign(purpose, data)
    assert verify_signature(KEYS[0].public_bytes, purpose, data, sig)
    assert not verify_signature(KEYS[1].public_bytes, purpose, data, sig)
    assert not verify_signature(KEYS[0].public_bytes, purpose + "x", data, sig)
    if other != data:
        assert not verify_signature(KEYS[0].public_bytes, purpose, other, sig)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([f"{i:032x}" for i in range(8)]), max_size=30))
def test_the_nonce_cache_refuses_exactly_the_nonces_seen_before(nonces):
    cache, seen = NonceCache(window_s=60), set()
    for n in nonces:
        if n in seen:
            with pytest.raises(RequestRefused, match="replayed"):
                cache.add(n, 1000.0, 1000.0)
        else:
            cache.add(n, 1000.0, 1000.0)
            seen.add(n)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from("abc"), max_size=40))
def test_a_flooding_device_is_refused_without_crowding_out_the_others(devices):
    cache, held = NonceCache(window_s=60, per_device=5), {}
    for i, d in enumerate(devices):
        if held.get(d, 0) >= 5:
            with pytest.raises(RequestRefused, match="too many"):
                cache.add(f"{i:032x}", 0.0, 0.0, d)
        else:
            cache.add(f"{i:032x}", 0.0, 0.0, d)
            held[d] = held.get(d, 0) + 1
    cache.add("f" * 32, 100.0, 100.0, "a")  # the window has passed: every device starts afresh


def test_a_nonce_is_forgotten_only_once_its_timestamp_is_stale():
    cache = NonceCache(window_s=10)
    cache.add("a" * 32, 100.0, 100.0)
    with pytest.raises(RequestRefused):
        cache.add("a" * 32, 100.0, 109.0)
    cache.add("a" * 32, 120.0, 120.5)  # 100 + 10 < 120.5: gone (its request would be refused as stale)


def test_signed_requests_are_accepted_once_and_refusals_are_counted(tmp_path):
    reg = _registry(tmp_path, ["tok-a", "tok-b"], KEYS[:2])
    md = RequestSigner("tok-a", KEYS[0], "phone-a").metadata("Report")
    assert reg.verify(md, "Report").name == "device-0000"
    with pytest.raises(RequestRefused, match="replayed"):
        reg.verify(md, "Report")
    with pytest.raises(RequestRefused, match="bad signature"):  # a signature for Report does not open CheckIn
        reg.verify(RequestSigner("tok-a", KEYS[0], "a").metadata("Report"), "CheckIn")
    with pytest.raises(RequestRefused, match="wrong key"):  # a valid token with another device's key
        reg.verify(RequestSigner("tok-a", KEYS[1], "a").metadata("CheckIn"), "CheckIn")
    with pytest.raises(RequestRefused, match="unsigned"):  # a stolen token alone
        reg.verify(RequestSigner("tok-a", None, "a").metadata("CheckIn"), "CheckIn")
    with pytest.raises(RequestRefused, match="unknown device token"):
        reg.verify(RequestSigner("tok-z", KEYS[0], "a").metadata("CheckIn"), "CheckIn")
    assert reg.refusals == {"replayed": 1, "bad signature": 1, "wrong key": 1, "unsigned": 1, "unknown token": 1}


def test_a_stale_or_future_timestamp_is_refused(tmp_path):
    reg = _registry(tmp_path, ["tok-a"], KEYS[:1])
    md = dict(RequestSigner("tok-a", KEYS[0], "a").metadata("CheckIn"))
    ts = int(md[TS_HEADER]) / 1000
    for now in (ts + 61, ts - 61):
        with pytest.raises(RequestRefused, match="stale timestamp"):
            check_request(md, "CheckIn", token_digest("tok-a"), KEYS[0].public_bytes, reg.nonces, 60, now=now)
    check_request(md, "CheckIn", token_digest("tok-a"), KEYS[0].public_bytes, reg.nonces, 60, now=ts + 59)


def test_another_devices_signature_with_my_token_is_refused(tmp_path):
    """Device B signs with its own key but presents A's token (a stolen token): refused, whatever key id it claims."""
    reg = _registry(tmp_path, ["tok-a", "tok-b"], KEYS[:2])
    md = dict(RequestSigner("tok-b", KEYS[1], "b").metadata("CheckIn"))
    md["authorization"] = "Bearer tok-a"
    with pytest.raises(RequestRefused, match="wrong key"):
        reg.verify(list(md.items()), "CheckIn")
    forged = {**md, KEY_HEADER: dict(RequestSigner("tok-a", KEYS[0], "a").metadata("CheckIn"))[KEY_HEADER]}
    with pytest.raises(RequestRefused, match="bad signature"):
        reg.verify(list(forged.items()), "CheckIn")


header_values = st.one_of(st.text(max_size=60), st.sampled_from(["", "0", "9" * 17, "f" * 32, "AAAA", "=="]))


@settings(max_examples=80, deadline=None)
@given(
    ts=header_values,
    nonce=header_values,
    kid=header_values,
    sig=header_values,
    drop=st.sets(st.sampled_from([TS_HEADER, NONCE_HEADER, KEY_HEADER, SIG_HEADER])),
)
def test_arbitrary_signature_headers_are_refused_with_a_reason(tmp_path_factory, ts, nonce, kid, sig, drop):
    reg = _registry(tmp_path_factory.mktemp("reg"), ["tok-a"], KEYS[:1])
    md = {"authorization": "Bearer tok-a", TS_HEADER: ts, NONCE_HEADER: nonce, KEY_HEADER: kid, SIG_HEADER: sig}
    with pytest.raises(RequestRefused) as e:
        reg.verify([(k, v) for k, v in md.items() if k not in drop], "CheckIn")
    assert e.value.reason and str(e.value)
    assert sum(reg.refusals.values()) == 1


def test_revocation_by_name_digest_or_token_takes_effect_on_the_next_call(tmp_path):
    reg = _registry(tmp_path, ["tok-a", "tok-b", "tok-c"], KEYS)
    signers = [RequestSigner(t, k, "x") for t, k in zip(["tok-a", "tok-b", "tok-c"], KEYS)]
    for s in signers:
        reg.verify(s.metadata("CheckIn"), "CheckIn")
    (tmp_path / "revoked.txt").write_text(f"device-0000\nsha256:{token_digest('tok-b')}\ntok-c\n")
    os.utime(tmp_path / "revoked.txt", ns=(1, 1))  # a new mtime even within the clock's resolution
    for s in signers:
        with pytest.raises(RequestRefused, match="revoked"):
            reg.verify(s.metadata("CheckIn"), "CheckIn")


def test_a_token_bound_to_a_certificate_is_refused_with_another_certificate(tmp_path):
    entry = {
        "name": "d",
        "token_sha256": token_digest("t"),
        "signing_key": base64.b64encode(KEYS[0].public_bytes).decode(),
        "cert_sha256": "a" * 64,
    }
    write_private(tmp_path / "devices.json", json.dumps({"devices": [entry]}).encode())
    reg = TokenRegistry(tmp_path / "devices.json")
    signer = RequestSigner("t", KEYS[0], "d")
    assert reg.verify(signer.metadata("CheckIn"), "CheckIn", "a" * 64).name == "d"
    assert reg.verify(signer.metadata("CheckIn"), "CheckIn", None).name == "d"  # no TLS client certificate
    with pytest.raises(RequestRefused, match="certificate"):
        reg.verify(signer.metadata("CheckIn"), "CheckIn", "b" * 64)


def test_tokens_files_are_private_and_the_server_keeps_only_digests(tmp_path):
    tokens = make_tokens(tmp_path / "tokens.txt", 5, tmp_path / "server.txt")
    assert _mode(tmp_path / "tokens.txt") == 0o600 and _mode(tmp_path / "server.txt") == 0o600
    server_text = (tmp_path / "server.txt").read_text()
    assert not any(t in server_text for t in tokens)
    reg = TokenRegistry(tmp_path / "server.txt")
    assert all(reg.authenticate(t) for t in tokens) and reg.authenticate("nope") is None
    assert reg.verify(RequestSigner(tokens[0], None, "d").metadata("CheckIn"), "CheckIn").signing_key is None
    with pytest.raises(ConfigError, match="digests"):
        make_tokens(tmp_path / "server.txt", 5)
    (tmp_path / "tokens.txt").chmod(0o644)  # a file from an older version
    assert make_tokens(tmp_path / "tokens.txt", 5) == tokens and _mode(tmp_path / "tokens.txt") == 0o600


@pytest.mark.parametrize(
    "text, word", [("{not json", "registry"), ('{"devices": [{"name": "d"}]}', "signing_key"), ("sha256:xyz\n", "hex")]
)
def test_a_malformed_registry_is_a_config_error(tmp_path, text, word):
    (tmp_path / "reg").write_text(text)
    with pytest.raises(ConfigError, match=word):
        TokenRegistry(tmp_path / "reg")


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=2000))
def test_write_private_writes_0600_all_or_nothing(tmp_path_factory, data):
    p = write_private(tmp_path_factory.mktemp("w") / "sub" / "f", data)
    assert p.read_bytes() == data and _mode(p) == 0o600
    assert [q.name for q in p.parent.iterdir()] == ["f"]  # no temporary file left behind


def test_a_signing_key_round_trips_and_a_bad_file_is_a_config_error(tmp_path):
    KEYS[0].save(tmp_path / "k")
    assert _mode(tmp_path / "k") == 0o600
    assert DeviceKey.load(tmp_path / "k").public_bytes == KEYS[0].public_bytes
    (tmp_path / "bad").write_text("not a key")
    for path in (tmp_path / "bad", tmp_path / "missing"):
        with pytest.raises(ConfigError, match="signing key"):
            DeviceKey.load(path)


@settings(max_examples=50, deadline=None)
@given(names=st.lists(st.text(max_size=30), min_size=2, max_size=10, unique=True))
def test_anonymous_keys_are_stable_and_distinct(names):
    keys = [anonymous_key(n) for n in names]
    assert keys == [anonymous_key(n) for n in names] and len(set(keys)) == len(keys)
    assert all(k.startswith("anon-") for k in keys)


@settings(max_examples=50, deadline=None)
@given(delay=st.floats(0.0, 1e4), seed=st.integers(0, 2**32))
def test_backoff_jitter_stays_within_half_and_the_full_delay(delay, seed):
    import random

    d = jittered(delay, random.Random(seed))
    assert delay / 2 <= d <= delay


def test_refusals_are_auth_errors():
    assert issubclass(RequestRefused, AuthError)


def test_a_protocol_can_check_a_devices_own_signature_through_the_registry(tmp_path):
    """The API for signing other messages (SecAgg key advertisements) with the same device keys."""
    reg = _registry(tmp_path, ["tok-a", "tok-b"], KEYS[:2])
    key = reg.verify(RequestSigner("tok-b", KEYS[1], "b").metadata("CheckIn"), "CheckIn").key
    advert = b"public keys of round 7"
    sig = KEYS[1].sign("secagg-advertise", advert)
    assert verify_signature(reg.by_key(key).signing_key, "secagg-advertise", advert, sig)
    assert not verify_signature(reg.by_key(key).signing_key, "request", advert, sig)
    assert reg.by_key("0" * 16) is None
