"""write_atomic: a file is replaced all or nothing, with the mode asked for, and no temporary file stays."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamrah.core.files import write_atomic


@settings(max_examples=40, deadline=None)
@given(old=st.binary(max_size=2000), new=st.binary(max_size=2000), fail_after=st.none() | st.integers(0, 2000))
def test_the_file_holds_the_old_bytes_or_the_new_ones_never_part(tmp_path_factory, old, new, fail_after):
    path = tmp_path_factory.mktemp("w") / "f.bin"
    path.write_bytes(old)

    def writer(f):
        if fail_after is not None:
            f.write(new[:fail_after])
            raise OSError("disk full")
        f.write(new)

    if fail_after is None:
        assert write_atomic(path, writer) == path and path.read_bytes() == new
    else:
        with pytest.raises(OSError, match="disk full"):
            write_atomic(path, writer)
        assert path.read_bytes() == old
    assert os.listdir(path.parent) == ["f.bin"]  # no temporary file left


def test_text_bytes_and_modes(tmp_path):
    private = write_atomic(tmp_path / "key", b"secret", private=True)
    assert private.read_bytes() == b"secret" and stat.S_IMODE(private.stat().st_mode) == 0o600
    old = os.umask(0o022)
    try:
        public = write_atomic(tmp_path / "summary.json", "é\n")
    finally:
        os.umask(old)
    assert public.read_text(encoding="utf-8") == "é\n" and stat.S_IMODE(public.stat().st_mode) == 0o644
    with pytest.raises(FileNotFoundError):  # a missing folder is the caller's to make
        write_atomic(tmp_path / "nope" / "x", b"")
