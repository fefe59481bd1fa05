"""The device registry's reload fails closed: a revocation list that disappears, or that changes
within its mtime's resolution, never lets a revoked device back in; and a timestamp header of
non-ASCII digits is refused with a reason, not a crash."""

from __future__ import annotations

import base64
import json
import os

import pytest

from hamrah.transport.identity import TS_HEADER, DeviceKey, RequestRefused, RequestSigner, token_digest, write_private
from hamrah.transport.security import TokenRegistry

KEY = DeviceKey.generate()
SIGNER = RequestSigner("tok-a", KEY, "x")


def _registry(tmp_path, revoked: str) -> TokenRegistry:
    entry = {
        "name": "dev-a",
        "token_sha256": token_digest("tok-a"),
        "signing_key": base64.b64encode(KEY.public_bytes).decode(),
    }
    write_private(tmp_path / "devices.json", json.dumps({"devices": [entry]}).encode())
    (tmp_path / "revoked.txt").write_text(revoked)
    return TokenRegistry(tmp_path / "devices.json", tmp_path / "revoked.txt", recheck_s=0.0)


def _call(reg: TokenRegistry) -> None:
    reg.verify(SIGNER.metadata("CheckIn"), "CheckIn")


def test_a_revocation_list_that_disappears_keeps_its_devices_revoked(tmp_path):
    reg = _registry(tmp_path, "dev-a\n")
    with pytest.raises(RequestRefused, match="revoked"):
        _call(reg)
    (tmp_path / "revoked.txt").unlink()  # an editor saving by rename, or a mistake: not an amnesty
    with pytest.raises(RequestRefused, match="revoked"):
        _call(reg)
    (tmp_path / "revoked.txt").write_text("")  # an empty list revokes nobody, on purpose
    _call(reg)


def test_a_revocation_written_within_the_mtime_resolution_is_seen(tmp_path):
    reg = _registry(tmp_path, "dev-b\n")
    _call(reg)
    st = os.stat(tmp_path / "revoked.txt")
    (tmp_path / "revoked.txt").write_text("dev-a\n")  # same size, same file
    os.utime(tmp_path / "revoked.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # a coarse clock: same mtime
    with pytest.raises(RequestRefused, match="revoked"):
        _call(reg)


def test_a_revocation_restored_with_an_old_mtime_is_seen(tmp_path):
    reg = _registry(tmp_path, "")
    os.utime(tmp_path / "revoked.txt", ns=(1, 1))
    _call(reg)
    (tmp_path / "revoked.txt").write_text("dev-a\n")  # e.g. `cp -p` of an older list: its old mtime
    os.utime(tmp_path / "revoked.txt", ns=(1, 1))
    with pytest.raises(RequestRefused, match="revoked"):
        _call(reg)


@pytest.mark.parametrize("ts", ["²", "¹²³", "١٢٣٤٥٦٧٨٩٠١٢٣"])
def test_a_timestamp_of_non_ascii_digits_is_refused_as_malformed(tmp_path, ts):
    reg = _registry(tmp_path, "")
    md = [(k, ts if k == TS_HEADER else v) for k, v in SIGNER.metadata("CheckIn")]
    with pytest.raises(RequestRefused, match="malformed") as e:
        reg.verify(md, "CheckIn")
    assert reg.refusals[e.value.reason] == 1
