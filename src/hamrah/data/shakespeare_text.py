"""Shakespeare's text as model inputs: LEAF's vocabulary, the plays' lines by role, and the sequences.

The vocabulary (:data:`VOCAB`, :func:`encode`, :func:`decode`), :func:`split_into_plays` (the complete works
into plays and each play's lines by role) and the cut of a role's lines into training and test sequences:
steps 1 to 6 of :mod:`hamrah.data.shakespeare`, which loads the data set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

import numpy as np

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
