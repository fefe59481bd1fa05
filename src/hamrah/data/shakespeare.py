"""Federated Shakespeare: one client per speaking role, next-character prediction.

Built from the raw Project Gutenberg text of *The Complete Works of William
Shakespeare* (eBook #100, 2011 posting, ``pg100.txt.gz``) the way McMahan et al.
2017 ("Communication-Efficient Learning of Deep Networks from Decentralized
Data") and LEAF (Caldas et al. 2018, ``preprocess_shakespeare.py``) built it:

1. **Plays.** The text is cut into works at each ``by William Shakespeare``
   line; the title is the first non-blank line 2 to 7 lines above it. The
   Sonnets (the first work) are skipped, and a "work" with fewer than two
   speaking roles (the narrative poem *A Lover's Complaint*) is dropped:
   36 plays remain.
2. **Roles.** A speech starts with a line ``"  NAME. text"`` (exactly two spaces,
   a name of letters and spaces, a period, a space); the lines after it that
   are indented by at least four spaces continue it. *The Comedy of Errors* is
   typeset differently in this edition (names at column 0, continuation lines
   indented by two), so there a speech starts with ``"NAME. text"`` at column 0
   (but not ``"ACT ..."``), and every following non-blank line continues it
   until a blank line or the copyright banner (``<<...``). (The reference code
   runs on past blank lines there, adding stage directions such as "Enter
   ..." to the speech; stopping at a blank line changes no client count.)
3. **Lines.** A role's "lines" are the physical lines of its speeches
   (whitespace stripped, blank lines skipped), in order of appearance. As in
   the reference code, names are kept as written (*Hamlet* abbreviates: its
   prince is role ``Ham``; ``"SIR Toby"`` and ``"SIR TOBY"`` are two roles; the
   name ends at the first period, so ``"MRS. PAGE."`` and ``"MRS. FORD."`` are both
   role ``MRS``) and stage directions indented under a speech (``"Exit."``) stay
   in the text.
4. **Clients.** One client per (play, role) with at least ``min_lines`` lines.
   The default, 3, reproduces the paper's count exactly: **1,146 clients**
   (``info["num_roles"]``). McMahan et al. write "at least two lines", but the
   preprocessing they released (Google, 2017, kept in LEAF) skips roles with
   ``len(lines) <= 2``; with ``min_lines=2`` this text gives 1,204 clients.
   LEAF's later fix that upper-cases names merges 2 of the 1,146 roles (1,144).
5. **Split.** Per role, the first ``floor(0.8 * n)`` lines (at least 1, at most
   ``n - 1``) are training lines and the rest test lines (McMahan et al.: "the
   first 80% of lines"; LEAF's script keeps ``max(floor(0.2 * n), 1)`` test lines).
6. **Sequences.** A role's training lines are joined with single spaces (runs of
   spaces collapsed to one, as LEAF does), encoded with :data:`VOCAB` and cut
   into non-overlapping chunks of ``SEQ_LEN + 1 = 81`` ids; ``x = chunk[:-1]``,
   ``y = chunk[1:]`` (an LSTM unrolled over 80 characters predicts each next
   character). The last, partial chunk is right-padded with :data:`PAD_ID`
   in both ``x`` and ``y`` (``ignore_index = PAD_ID``); a last chunk of a
   single character has no target and is dropped. Test lines likewise.

With the bundled file and the defaults this gives 36 plays, 1,146 roles, 84,315
training and 21,653 test lines, and 43,101 training and 11,268 test sequences
(``load_shakespeare().info`` has the counts). Reading, checking and parsing take
about 0.3 s; pass ``cache_dir`` to keep the result as a compressed ``.npz``.

The file is looked up, in order, at: an explicit ``path``;
``$HAMRAH_DATA/shakespeare/pg100.txt.gz``; the copy bundled with the repository
(``data/shakespeare/pg100.txt.gz``); ``~/.cache/hamrah/shakespeare/pg100.txt.gz``.
Its checksum is verified. Nothing is downloaded: the file now served at
https://www.gutenberg.org/cache/epub/100/pg100.txt is a later posting whose bytes
differ, so the 2011 posting must be supplied.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from hamrah.core.errors import DataError
from hamrah.data.federated import ArrayData, Dataset

__all__ = [
    "MIN_LINES",
    "NUM_CLASSES",
    "OOV_ID",
    "PAD_ID",
    "PG100_SHA256",
    "PG100_TEXT_SHA256",
    "SEQ_LEN",
    "VOCAB",
    "decode",
    "encode",
    "load_shakespeare",
    "split_into_plays",
]

# -- files -------------------------------------------------------------------------

FILENAME = "pg100.txt.gz"
#: sha256 of ``pg100.txt.gz`` as bundled (gzip of the 2011 posting of eBook #100).
PG100_SHA256 = "029b69293f2bfd21c0b368753ab8ddaaca6b43622df9f38733b299ba2e29242c"
#: sha256 of the uncompressed text (accepted too: a re-compressed or plain ``pg100.txt``).
PG100_TEXT_SHA256 = "7a8203c516f67bc90e1dba9e3de401a3c4118cd21bc93dbe9724eee1c83660c7"
_CACHE_FORMAT = 1
_CACHE_KEYS = {"train_seq", "train_groups", "test_seq", "test_groups", "group_names", "meta"}

# -- vocabulary ----------------------------------------------------------------------

#: LEAF's 80 characters (``language_utils.ALL_LETTERS``); every character of the
#: plays' speech is among them.
VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
#: Padding id; also the targets' ``ignore_index``.
PAD_ID = 0
#: Id of any character not in :data:`VOCAB` (``VOCAB[i]`` has id ``i + 1``).
OOV_ID = len(VOCAB) + 1
#: Output classes: pad + 80 characters + out-of-vocabulary = 82.
NUM_CLASSES = len(VOCAB) + 2
#: Characters per input sequence (the LSTM's unroll length).
SEQ_LEN = 80
#: Default minimum number of lines for a role to become a client (see module docstring).
MIN_LINES = 3
OOV_CHAR = "\ufffd"

_CHAR_TO_ID = {c: i + 1 for i, c in enumerate(VOCAB)}
# Byte -> id table for fast encoding of ASCII text (non-ASCII goes through encode()).
_BYTE_TO_ID = np.full(256, OOV_ID, dtype=np.uint8)
for _c, _i in _CHAR_TO_ID.items():
    _BYTE_TO_ID[ord(_c)] = _i
del _c, _i


def encode(text: str) -> list[int]:
    """Return the ids of ``text``'s characters (:data:`OOV_ID` for one not in :data:`VOCAB`)."""
    return [_CHAR_TO_ID.get(c, OOV_ID) for c in text]


def decode(ids: Iterable[int]) -> str:
    """Return the text of ``ids``: padding is skipped, :data:`OOV_ID` becomes ``U+FFFD``."""
    out = []
    for i in ids:
        i = int(i)
        if i == PAD_ID:
            continue
        out.append(VOCAB[i - 1] if 1 <= i <= len(VOCAB) else OOV_CHAR)
    return "".join(out)


def _encode_array(text: str) -> np.ndarray:
    """Vectorised :func:`encode` -> uint8 array."""
    if text.isascii():
        return _BYTE_TO_ID[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    return np.asarray(encode(text), dtype=np.uint8)


# -- parsing ---------------------------------------------------------------------------

_AUTHOR = "by William Shakespeare"
_SPEECH_RE = re.compile(r"^  ([a-zA-Z][a-zA-Z ]*)\. (.*)")
_CONT_RE = re.compile(r"^    (.*)")
_COE_TITLE = "THE COMEDY OF ERRORS"
_COE_SPEECH_RE = re.compile(r"^([a-zA-Z][a-zA-Z ]*)\. (.*)")
_END_MARK = "End of the Project Gutenberg EBook"


def split_into_plays(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """Split the complete works into plays and each play's lines by role.

    Returns ``[(title, {role: [line, ...]}), ...]`` in order of appearance (roles in
    order of first speech); only works with at least two roles are kept.
    """
    lines = text.splitlines()
    authors = [i for i, line in enumerate(lines) if _AUTHOR in line]
    if len(authors) < 2:
        raise ValueError(f"expected the complete works, with a {_AUTHOR!r} line per work")
    plays: list[tuple[str, dict[str, list[str]]]] = []
    roles: dict[str, list[str]] = {}
    role: str | None = None
    coe = False
    # authors[0] is the Sonnets: start at the second work.
    for i in range(authors[1], len(lines)):
        line = lines[i]
        if line.startswith(_END_MARK):
            break
        if _AUTHOR in line:
            title = next((lines[i - k].strip() for k in range(2, 8) if lines[i - k].strip()), "")
            if not title:
                raise ValueError(f"no title above line {i + 1}")
            roles, role, coe = {}, None, title == _COE_TITLE
            plays.append((title, roles))
            continue
        m = (_COE_SPEECH_RE if coe else _SPEECH_RE).match(line)
        if m:
            name = m.group(1)
            if coe and name.startswith("ACT "):
                role = None
                continue
            role = name
            _add_line(roles.setdefault(role, []), m.group(2))
            continue
        if role is None:
            continue
        if coe:
            if not line.strip() or line.startswith("<"):
                role = None
            else:
                _add_line(roles[role], line)
        else:
            m = _CONT_RE.match(line)
            if m:
                _add_line(roles[role], m.group(1))
            # Any other line (blank, unindented) is skipped without ending the speech,
            # as in the reference code.
    return [(title, r) for title, r in plays if len(r) > 1]


def _add_line(dest: list[str], line: str) -> None:
    line = line.strip()
    if line:
        dest.append(line)


def _num_train_lines(n: int) -> int:
    """First 80% of ``n >= 2`` lines, at least one, leaving at least one for test."""
    return min(max((4 * n) // 5, 1), n - 1)


_SPACES_RE = re.compile(r"  +")


def _to_sequences(lines: Sequence[str]) -> np.ndarray:
    """Join ``lines`` and cut them into ``[m, SEQ_LEN + 1]`` uint8 chunks (last one padded)."""
    text = _SPACES_RE.sub(" ", " ".join(lines))
    ids = _encode_array(text)
    width = SEQ_LEN + 1
    m = -(-len(ids) // width)
    if len(ids) - (m - 1) * width < 2:  # a last chunk of one character has no target
        m -= 1
        ids = ids[: m * width]
    out = np.zeros((m, width), dtype=np.uint8)
    out.reshape(-1)[: len(ids)] = ids
    return out


def _build(text: str, min_lines: int) -> dict[str, np.ndarray]:
    plays = split_into_plays(text)
    names: list[str] = []
    parts: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    groups: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    counts = {"train_lines": 0, "test_lines": 0}
    num_role_all = 0
    for title, roles in plays:
        for role, lines in roles.items():
            num_role_all += 1
            if len(lines) < min_lines:
                continue
            gid = len(names)
            names.append(f"{title}:{role}")
            k = _num_train_lines(len(lines))
            for split, chunk in (("train", lines[:k]), ("test", lines[k:])):
                seq = _to_sequences(chunk)
                parts[split].append(seq)
                groups[split].append(np.full(len(seq), gid, dtype=np.int64))
                counts[f"{split}_lines"] += len(chunk)
    arrays = {
        f"{s}_{what}": np.concatenate(v[s])
        for s in ("train", "test")
        for what, v in (("seq", parts), ("groups", groups))
    }
    arrays["group_names"] = np.array(names, dtype=np.str_)
    meta = {
        "num_plays": len(plays),
        "num_roles_total": num_role_all,
        "num_train_lines": counts["train_lines"],
        "num_test_lines": counts["test_lines"],
    }
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


# -- locating and reading the file -------------------------------------------------------------


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("HAMRAH_DATA")
    if env:
        out.append(Path(env).expanduser() / "shakespeare" / FILENAME)
    out.append(Path(__file__).resolve().parents[3] / "data" / "shakespeare" / FILENAME)
    out.append(Path.home() / ".cache" / "hamrah" / "shakespeare" / FILENAME)
    return out


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


# -- cache -----------------------------------------------------------------------------------


def _cache_file(cache_dir: str | os.PathLike, text_sha: str, min_lines: int) -> Path:
    return Path(cache_dir).expanduser() / (f"shakespeare-{text_sha[:16]}-min{min_lines}-v{_CACHE_FORMAT}.npz")


def _load_cache(f: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception:  # missing or damaged: rebuild
        return None
    return arrays if arrays.keys() >= _CACHE_KEYS else None


def _save_cache(f: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f.name, suffix=".tmp", dir=f.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
            os.replace(tmp, f)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a cache that cannot be written is not an error


# -- loader ----------------------------------------------------------------------------------


def load_shakespeare(
    path: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    min_lines: int = MIN_LINES,
) -> Dataset:
    """Load federated Shakespeare (one group per speaking role) from ``pg100.txt.gz``.

    Args:
        path: the file (gzip or plain text); by default it is looked up as the
            module docstring says.
        cache_dir: if given, the parsed sequences are kept there as a compressed
            ``.npz`` keyed by the text's checksum, and reused.
        min_lines: a role becomes a client if it has at least this many lines
            (default 3: 1,146 clients, as McMahan et al. 2017; 2 gives 1,204).

    Returns:
        A :class:`Dataset` with ``x``, ``y`` of shape ``[N, 80]`` (int64 ids, pad 0),
        ``train_groups`` the role of each training sequence, ``group_names``
        ``"PLAY:ROLE"``, ``ignore_index = 0`` and ``num_classes = 82``. ``info`` holds
        the counts and ``test_groups``, the role of each test sequence.

    Raises:
        DataError: the file is missing, corrupt or not the expected edition.
    """
    if int(min_lines) < 2:
        raise ValueError(f"min_lines must be >= 2 (one train and one test line), got {min_lines}")
    min_lines = int(min_lines)
    p = _locate(path)
    text, text_sha = _read_text(p)  # verified even when a cache is used
    arrays = None
    cache_file = None
    if cache_dir is not None:
        cache_file = _cache_file(cache_dir, text_sha, min_lines)
        arrays = _load_cache(cache_file)
    if arrays is None:
        try:
            arrays = _build(text, min_lines)
        except ValueError as e:
            raise DataError(f"Shakespeare data: cannot parse {p}: {e}") from e
        if cache_file is not None:
            _save_cache(cache_file, arrays)
    return _to_dataset(arrays, source=p, min_lines=min_lines)


def _to_dataset(arrays: dict[str, np.ndarray], *, source: Path, min_lines: int) -> Dataset:
    meta = json.loads(str(arrays["meta"]))
    splits = {}
    for s in ("train", "test"):
        seq = torch.from_numpy(arrays[f"{s}_seq"].astype(np.int64))
        splits[s] = ArrayData(seq[:, :-1].contiguous(), seq[:, 1:].contiguous())
    names = tuple(str(n) for n in arrays["group_names"])
    train_groups = arrays["train_groups"].astype(np.int64)
    test_groups = arrays["test_groups"].astype(np.int64)
    info = {
        **meta,
        "num_roles": len(names),
        "min_lines": min_lines,
        "num_train_sequences": len(splits["train"]),
        "num_test_sequences": len(splits["test"]),
        "num_train_targets": int((splits["train"].y != PAD_ID).sum()),
        "num_test_targets": int((splits["test"].y != PAD_ID).sum()),
        "seq_len": SEQ_LEN,
        "vocab": VOCAB,
        "pad_id": PAD_ID,
        "oov_id": OOV_ID,
        "source": str(source),
        "sha256": PG100_SHA256,
        "test_groups": test_groups,
    }
    return Dataset(
        name="shakespeare",
        train=splits["train"],
        test=splits["test"],
        num_classes=NUM_CLASSES,
        train_groups=train_groups,
        group_names=names,
        ignore_index=PAD_ID,
        info=info,
    )
