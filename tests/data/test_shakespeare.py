"""Federated Shakespeare built from the bundled pg100.txt.gz."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from hamrah.core.errors import DataError
from hamrah.data import shakespeare as sh
from hamrah.data import shakespeare_files, shakespeare_text
from hamrah.data.shakespeare import (
    NUM_CLASSES,
    OOV_ID,
    PAD_ID,
    SEQ_LEN,
    VOCAB,
    decode,
    encode,
    load_shakespeare,
    split_into_plays,
)

HAMLET = "THE TRAGEDY OF HAMLET, PRINCE OF DENMARK:Ham"


@pytest.fixture(scope="module")
def ds():
    return load_shakespeare()


def test_clients_match_the_paper(ds):
    # McMahan et al. 2017 report 1,146 clients; the reference preprocessing keeps
    # roles with more than two lines.
    assert ds.info["num_roles"] == len(ds.group_names) == 1146
    assert ds.info["num_plays"] == 36
    assert len(set(ds.group_names)) == len(ds.group_names)
    assert all(":" in n for n in ds.group_names)


def test_containers_and_shapes(ds):
    assert ds.name == "shakespeare"
    assert ds.num_classes == NUM_CLASSES == len(VOCAB) + 2 == 82
    assert ds.ignore_index == PAD_ID == 0
    for split in (ds.train, ds.test):
        assert split.x.dtype == split.y.dtype == torch.int64
        assert split.x.shape == split.y.shape and split.x.shape[1] == SEQ_LEN
        assert int(split.x.min()) >= 0 and int(split.x.max()) < NUM_CLASSES
    assert len(ds.train) == ds.info["num_train_sequences"] > 40_000
    assert len(ds.test) == ds.info["num_test_sequences"] > 10_000
    assert ds.train_groups.dtype == np.int64 and ds.train_groups.shape == (len(ds.train),)
    assert ds.info["test_groups"].shape == (len(ds.test),)
    # Every character of the plays is in LEAF's vocabulary.
    assert not (ds.train.x == OOV_ID).any() and not (ds.test.x == OOV_ID).any()


def test_every_role_has_train_and_test_sequences(ds):
    n = len(ds.group_names)
    assert np.bincount(ds.train_groups, minlength=n).min() >= 1
    assert np.bincount(ds.info["test_groups"], minlength=n).min() >= 1
    # Sequences of a role are contiguous and roles are in order.
    assert np.all(np.diff(ds.train_groups) >= 0)
    assert np.all(np.diff(ds.info["test_groups"]) >= 0)
    # Roughly 80% of lines are training lines.
    lines = ds.info["num_train_lines"] + ds.info["num_test_lines"]
    assert 0.75 < ds.info["num_train_lines"] / lines < 0.82


def test_targets_are_inputs_shifted_by_one(ds):
    for split in (ds.train, ds.test):
        x, y = split.x, split.y
        assert torch.equal(y[:, :-1], x[:, 1:])
        # Padding only at the end of a row, in x and y alike; a row has a target.
        real = y != PAD_ID
        assert torch.equal(real, torch.cumprod(real.int(), dim=1).bool())
        assert real[:, 0].all()
        assert torch.equal(x[:, 1:] == PAD_ID, y[:, :-1] == PAD_ID)
    # Only a role's last sequence may be padded.
    last = np.r_[np.diff(ds.train_groups) != 0, True]
    padded = (ds.train.y[:, -1] == PAD_ID).numpy()
    assert not padded[~last].any()


def test_known_role_text(ds):
    assert any("HAMLET" in n for n in ds.group_names)
    g = ds.group_names.index(HAMLET)
    rows = np.flatnonzero(ds.train_groups == g)
    assert len(rows) > 500
    assert decode(ds.train.x[rows[0]]).startswith(
        "[aside] A little more than kin, and less than kind! Not so, my lord."
    )
    # The role's sequences are its training lines, joined with single spaces and cut
    # into non-overlapping chunks of 81 characters (x = chunk[:-1], y = chunk[1:]).
    text, _ = shakespeare_files._read_text(Path(ds.info["source"]))
    plays = dict(split_into_plays(text))
    lines = plays["THE TRAGEDY OF HAMLET, PRINCE OF DENMARK"]["Ham"]
    k = shakespeare_text._num_train_lines(len(lines))
    expected = " ".join(w for w in " ".join(lines[:k]).split(" ") if w)
    chunks = [torch.cat([ds.train.x[r], ds.train.y[r, -1:]]) for r in rows]
    assert decode(torch.cat(chunks)) == expected


def test_encode_decode_round_trip():
    text = "To be, or not to be: that is the question.\nWhether 'tis nobler [aside]"
    ids = encode(text)
    assert len(ids) == len(text) and min(ids) >= 1 and max(ids) <= len(VOCAB)
    assert decode(ids) == text
    assert encode(VOCAB) == list(range(1, len(VOCAB) + 1))
    assert encode("é~") == [OOV_ID, OOV_ID]
    assert decode([PAD_ID, *encode("ab"), PAD_ID, OOV_ID]) == "ab\ufffd"
    assert decode(torch.tensor(encode("Hi!"))) == "Hi!"


def test_train_test_line_split():
    for n in range(2, 60):
        k = shakespeare_text._num_train_lines(n)
        assert 1 <= k <= n - 1
        if n >= 5:  # the first 80% of lines, rounded down
            assert k / n <= 0.8 < (k + 1) / n
    assert [shakespeare_text._num_train_lines(n) for n in (2, 3, 5, 7, 10)] == [1, 2, 4, 5, 8]


def test_split_into_plays_on_a_small_text():
    text = "\n".join(
        [
            "THE SONNETS",
            "",
            "by William Shakespeare",
            "",
            "  1",
            "  From fairest. creatures",
            "",
            "A PLAY",
            "",
            "by William Shakespeare",
            "",
            "  KING. Hello there,",
            "    my good friend.",
            "                              Exit.",
            "",
            "  FOOL. Nuncle!",
            "  KING. Who calls?",
            "",
            "",
            "THE COMEDY OF ERRORS",
            "",
            "by William Shakespeare",
            "",
            "ACT I. SCENE 1",
            "DUKE. Merchant of Syracuse,",
            "  plead no more.",
            "",
            "Enter AEGEON",
            "AEGEON. Proceed.",
            "<<COPYRIGHT",
            "AEGEON. Again.",
            "",
            "A POEM",
            "",
            "by William Shakespeare",
            "",
            "  NARRATOR. Once.",
            "End of the Project Gutenberg EBook",
            "  LATER. Not parsed.",
        ]
    )
    plays = split_into_plays(text)
    assert [t for t, _ in plays] == ["A PLAY", "THE COMEDY OF ERRORS"]
    assert plays[0][1] == {
        "KING": ["Hello there,", "my good friend.", "Exit.", "Who calls?"],
        "FOOL": ["Nuncle!"],
    }
    assert plays[1][1] == {
        "DUKE": ["Merchant of Syracuse,", "plead no more."],
        "AEGEON": ["Proceed.", "Again."],
    }


def test_min_lines_option():
    ds2 = load_shakespeare(min_lines=2)
    assert ds2.info["num_roles"] == 1204
    with pytest.raises(ValueError):
        load_shakespeare(min_lines=1)


def test_cache_round_trip(tmp_path, ds):
    first = load_shakespeare(cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    second = load_shakespeare(cache_dir=tmp_path)
    for a in (first, second):
        assert torch.equal(a.train.x, ds.train.x) and torch.equal(a.test.y, ds.test.y)
        assert np.array_equal(a.train_groups, ds.train_groups)
        assert a.group_names == ds.group_names
        assert a.info["num_train_lines"] == ds.info["num_train_lines"]
    # A damaged cache file is rebuilt, not trusted.
    files[0].write_bytes(b"garbage")
    third = load_shakespeare(cache_dir=tmp_path)
    assert torch.equal(third.train.y, ds.train.y)


def test_plain_text_is_accepted(tmp_path, ds):
    p = tmp_path / "pg100.txt"
    p.write_bytes(gzip.decompress(Path(ds.info["source"]).read_bytes()))
    assert load_shakespeare(p).info["num_roles"] == 1146


def test_missing_file_names_the_path(tmp_path):
    p = tmp_path / "nope" / "pg100.txt.gz"
    with pytest.raises(DataError, match="nope") as e:
        load_shakespeare(p)
    assert str(p) in str(e.value)


def test_corrupt_gzip_names_the_path(tmp_path):
    p = tmp_path / "pg100.txt.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 40)
    with pytest.raises(DataError) as e:
        load_shakespeare(p)
    assert str(p) in str(e.value) and "gzip" in str(e.value)


def test_wrong_content_fails_the_checksum(tmp_path):
    p = tmp_path / "pg100.txt.gz"
    p.write_bytes(gzip.compress(b"  HAMLET. To be, or not to be.\n"))
    with pytest.raises(DataError, match="checksum") as e:
        load_shakespeare(p)
    assert str(p) in str(e.value) and sh.PG100_SHA256 in str(e.value)


def test_hamrah_data_is_looked_at_first(tmp_path, monkeypatch):
    bad = tmp_path / "shakespeare" / "pg100.txt.gz"
    bad.parent.mkdir()
    bad.write_bytes(b"not the complete works")
    monkeypatch.setenv("HAMRAH_DATA", str(tmp_path))
    with pytest.raises(DataError) as e:
        load_shakespeare()
    assert str(bad) in str(e.value)


def test_nothing_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("HAMRAH_DATA", str(tmp_path / "env"))
    places = [tmp_path / "env" / "shakespeare" / "pg100.txt.gz", tmp_path / "repo" / "x.gz"]
    monkeypatch.setattr(shakespeare_files, "_candidates", lambda: places)
    with pytest.raises(DataError) as e:
        load_shakespeare()
    msg = str(e.value)
    assert all(str(p) in msg for p in places)
    assert "HAMRAH_DATA" in msg
