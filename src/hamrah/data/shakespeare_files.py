"""The Shakespeare data set's file: finding ``pg100.txt.gz``, reading and verifying it.

Where the file is looked up and why nothing is downloaded: :mod:`hamrah.data.shakespeare`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

from hamrah.core.errors import DataError
from hamrah.data.locate import candidate_dirs

FILENAME = "pg100.txt.gz"
#: sha256 of ``pg100.txt.gz`` as bundled (gzip of the 2011 posting of eBook #100).
PG100_SHA256 = "029b69293f2bfd21c0b368753ab8ddaaca6b43622df9f38733b299ba2e29242c"
#: sha256 of the uncompressed text (accepted too: a re-compressed or plain ``pg100.txt``).
PG100_TEXT_SHA256 = "7a8203c516f67bc90e1dba9e3de401a3c4118cd21bc93dbe9724eee1c83660c7"

# -- locating and reading the file -------------------------------------------------------------


def _candidates() -> list[Path]:
    return [d / FILENAME for d in candidate_dirs("shakespeare")]


_HOW_TO = (
    "Get pg100.txt.gz (Project Gutenberg eBook #100, the 2011 posting; the hamrah repository "
    "bundles it as data/shakespeare/pg100.txt.gz) and either pass its path "
    "(load_shakespeare(path)) or put it at $HAMRAH_DATA/shakespeare/pg100.txt.gz."
)


def _locate(path: str | os.PathLike | None) -> Path:
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DataError(f"Shakespeare data: no file at {p}. {_HOW_TO}")
        return p
    looked = _candidates()
    for p in looked:
        if p.is_file():
            return p
    places = "\n".join(f"  - {p}" for p in looked)
    if not os.environ.get("HAMRAH_DATA"):
        places += "\n  - ($HAMRAH_DATA is not set)"
    raise DataError(f"Shakespeare data: {FILENAME} not found. Looked at:\n{places}\n{_HOW_TO}")


def _read_text(p: Path) -> tuple[str, str]:
    """Return the verified text of ``p`` and the sha256 of that text."""
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"Shakespeare data: cannot read {p}: {e}") from e
    if hashlib.sha256(raw).hexdigest() == PG100_SHA256:
        data = gzip.decompress(raw)
    else:
        data = raw
        if raw[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as e:
                raise DataError(
                    f"Shakespeare data: {p} is not a valid gzip file ({e}); the file is "
                    f"corrupt or truncated. Expected sha256 {PG100_SHA256}. {_HOW_TO}"
                ) from e
        got = hashlib.sha256(data).hexdigest()
        if got != PG100_TEXT_SHA256:
            raise DataError(
                f"Shakespeare data: checksum mismatch for {p}: expected the gzip file with "
                f"sha256 {PG100_SHA256} (or uncompressed text with sha256 {PG100_TEXT_SHA256}), "
                f"got text with sha256 {got}. It is not the 2011 posting of eBook #100 or it "
                f"is corrupt. {_HOW_TO}"
            )
    # The checksum guarantees valid UTF-8 (with a byte-order mark).
    return data.decode("utf-8-sig"), PG100_TEXT_SHA256
