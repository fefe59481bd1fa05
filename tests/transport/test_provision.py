"""`hamrah provision`: one kit per party, private files 0600, certificates with their role's key usage."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.transport.certs import cert_sha256, generate_tls
from hamrah.transport.identity import DeviceKey, RequestSigner, token_digest
from hamrah.transport.provision import DeviceCredentials, device_folders, provision
from hamrah.transport.security import TokenRegistry

PRIVATE = {"ca.key", "server.key", "client.key", "token", "signing.key", "devices.json"}


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def _roles(cert: x509.Certificate) -> tuple[bool, set]:
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    try:
        eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        eku = set()
    return ku.value.key_cert_sign, eku


@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 4), more=st.integers(0, 2))
def test_every_kit_matches_the_registry_and_every_secret_is_0600(tmp_path_factory, n, more):
    out = tmp_path_factory.mktemp("pki")
    provision(out, n)
    first = {k.name: k.token for k in device_folders(out, n)}
    files = provision(out, n + more)  # rerun: keeps the CA, the server and existing devices; adds the new ones
    for path in out.rglob("*"):
        if path.is_file():
            assert (stat.S_IMODE(os.stat(path).st_mode) == 0o600) == (path.name in PRIVATE), path
    reg = json.loads(files["registry"].read_text())["devices"]
    kits = device_folders(files["devices"], n + more)
    assert {k.name: k.token for k in kits[:n]} == first
    assert [e["name"] for e in reg] == [k.name for k in kits]
    for entry, kit in zip(reg, kits):
        assert entry["token_sha256"] == token_digest(kit.token) and kit.token not in files["registry"].read_text()
        assert base64.b64decode(entry["signing_key"]) == DeviceKey.load(kit.signing_key).public_bytes
        assert entry["cert_sha256"] == cert_sha256(_cert(kit.tls_cert))
        assert _cert(kit.tls_cert).subject.rfc4514_string() == f"CN={kit.name}"
    registry = TokenRegistry(files["registry"])
    assert (
        registry.verify(
            RequestSigner(kits[-1].token, DeviceKey.load(kits[-1].signing_key), "d").metadata("CheckIn"), "CheckIn"
        ).name
        == kits[-1].name
    )


def test_certificates_carry_their_roles_key_usage(tmp_path):
    files = provision(tmp_path, 1, hosts=("fl.example.org", "10.0.0.7"))
    ca, server = _cert(tmp_path / "ca" / "ca.pem"), _cert(files["server"] / "server.pem")
    client = _cert(device_folders(tmp_path, 1)[0].tls_cert)
    assert _roles(ca) == (True, set())
    assert _roles(server) == (False, {ExtendedKeyUsageOID.SERVER_AUTH})
    assert _roles(client) == (False, {ExtendedKeyUsageOID.CLIENT_AUTH})
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    tls = generate_tls(tmp_path / "tls")
    assert _roles(_cert(tls["server"]))[1] == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert _roles(_cert(tls["client"]))[1] == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert stat.S_IMODE(os.stat(tls["client_key"]).st_mode) == 0o600


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"devices": 0}, "--devices"),
        ({"devices": 1, "hosts": ()}, "--hosts"),
        ({"devices": 1, "prefix": "a/b"}, "--prefix"),
    ],
)
def test_bad_provisioning_arguments_are_config_errors_and_write_nothing(tmp_path, kw, word):
    with pytest.raises(ConfigError, match=word):
        provision(tmp_path / "pki", **kw)
    assert not (tmp_path / "pki").exists()


def test_a_damaged_kit_is_named(tmp_path):
    provision(tmp_path, 2)
    (tmp_path / "devices" / "device-0001" / "signing.key").unlink()
    with pytest.raises(ConfigError, match="device-0001.*signing.key"):
        device_folders(tmp_path, 2)
    with pytest.raises(ConfigError, match="holds 2 device kits, 3 needed"):
        device_folders(tmp_path, 3)
    with pytest.raises(ConfigError, match="missing"):
        DeviceCredentials.load(tmp_path / "nowhere")
