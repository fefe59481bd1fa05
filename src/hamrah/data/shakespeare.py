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
about 0.3 s; pass ``cache_dir`` to keep the result as an ``.npz``.

The file is looked up, in order, at: an explicit ``path``;
``$HAMRAH_DATA/shakespeare/pg100.txt.gz``; the copy bundled with the repository
(``data/shakespeare/pg100.txt.gz``); ``~/.cache/hamrah/shakespeare/pg100.txt.gz``.
Its checksum is verified. Nothing is downloaded: the file now served at
https://www.gutenberg.org/cache/epub/100/pg100.txt is a later posting whose bytes
differ, so the 2011 posting must be supplied.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from hamrah.core.errors import DataError
from hamrah.data.federated import ArrayData, Dataset
from hamrah.data.locate import cached_arrays
from hamrah.data.shakespeare_files import FILENAME as FILENAME  # importable here as before (not in __all__)
from hamrah.data.shakespeare_files import (
    PG100_SHA256,
    PG100_TEXT_SHA256,
    _locate,
    _read_text,
)
from hamrah.data.shakespeare_text import (
    NUM_CLASSES,
    OOV_ID,
    PAD_ID,
    SEQ_LEN,
    VOCAB,
    _build,
    decode,
    encode,
    split_into_plays,
)
from hamrah.data.shakespeare_text import OOV_CHAR as OOV_CHAR  # importable here as before (not in __all__)

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

#: Default minimum number of lines for a role to become a client (see module docstring).
MIN_LINES = 3


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
        cache_dir: if given, the parsed sequences are kept there as an
            ``.npz`` keyed by the text's checksum (``hamrah.data.locate.cached_arrays``), and reused.
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

    def parse() -> dict[str, np.ndarray]:
        try:
            return _build(text, min_lines)
        except ValueError as e:
            raise DataError(f"Shakespeare data: cannot parse {p}: {e}") from e

    if cache_dir is None:
        arrays = parse()
    else:
        arrays = cached_arrays(f"shakespeare-min{min_lines}", {"pg100.txt": text_sha}, parse, folder=cache_dir)
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
