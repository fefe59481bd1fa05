"""Identity certificates for secure aggregation against a malicious server: `hamrah provision` issues one
per device (the CA's binding of its name to its Ed25519 signing key), adds it to kits made before, and a
device without one gets a one-line reason instead of a traceback."""

from __future__ import annotations

import pytest
from cryptography import x509

from hamrah.core.errors import ConfigError
from hamrah.device.secure import SecAggIdentity
from hamrah.transport.identity import IDENTITY_CERT, DeviceKey, verify_identity
from hamrah.transport.provision import device_folders, provision


def test_provision_certifies_each_signing_key_and_adds_certificates_to_old_kits(tmp_path):
    files = provision(tmp_path, 2)
    kits = device_folders(files["devices"], 2)
    for kit in kits:
        identity = SecAggIdentity.load(kit.signing_key, kit.tls_ca)
        name, public = verify_identity(identity.certificate, identity.ca)
        assert name == kit.name and public == DeviceKey.load(kit.signing_key).public_bytes
    old = files["devices"] / kits[0].name / IDENTITY_CERT
    before = x509.load_pem_x509_certificate(old.read_bytes()).public_key().public_bytes_raw()
    old.unlink()  # a kit made before identity certificates existed
    provision(tmp_path, 3)
    assert x509.load_pem_x509_certificate(old.read_bytes()).public_key().public_bytes_raw() == before
    assert (files["devices"] / "device-0002" / IDENTITY_CERT).is_file()


def test_a_device_without_its_identity_gets_a_clear_reason(tmp_path):
    files = provision(tmp_path, 1)
    (kit,) = device_folders(files["devices"], 1)
    (files["devices"] / kit.name / IDENTITY_CERT).unlink()
    with pytest.raises(ConfigError, match="re-run `hamrah provision`"):
        SecAggIdentity.load(kit.signing_key, kit.tls_ca)
    with pytest.raises(ConfigError, match="signing key and the CA"):
        SecAggIdentity.load(None, kit.tls_ca)
