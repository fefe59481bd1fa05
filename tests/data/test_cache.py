"""The decoded-array cache: decoded once, verified on every load, a bad entry rebuilt, nothing else written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hamrah.data.locate as locate
from hamrah.data.locate import cache_key, cached_arrays
from hamrah.data.mnist import FILES, _read_idx, load_mnist

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "mnist"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """Point the user cache at a temp folder; return the decoded-array folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "hamrah" / "decoded"


class Decoder:
    """A decode function that counts its calls."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays, self.calls = arrays, 0

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {k: v.copy() for k, v in self.arrays.items()}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return sorted(a) == sorted(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


arrays_st = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
    st.tuples(st.sampled_from([np.uint8, np.int64, np.float32]), st.lists(st.integers(0, 255), max_size=40)).map(
        lambda t: np.asarray(t[1], dtype=t[0])
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=arrays_st, flip=st.integers(0, 10_000), how=st.sampled_from(["flip", "truncate", "manifest", "gone"]))
def test_hit_equals_decode_and_any_damage_is_rebuilt(cache, arrays, flip, how):
    """A second load reads the entry (no decode) and returns the same arrays; a damaged entry
    (a flipped byte, a cut file, a garbled manifest, a missing file) is decoded again and replaced."""
    sources = {"a.gz": "0" * 64, "b.gz": format(len(arrays), "064x")}
    dec = Decoder(arrays)
    first = cached_arrays("t", sources, dec)
    second = cached_arrays("t", sources, dec)
    assert dec.calls == 1 and _same(first, arrays) and _same(second, arrays)
    npz = next(cache.glob("t-*.npz"))
    data = bytearray(npz.read_bytes())
    if how == "flip":
        data[flip % len(data)] ^= 0x01
        npz.write_bytes(bytes(data))
    elif how == "truncate":
        npz.write_bytes(bytes(data[: flip % len(data)]))
    elif how == "manifest":
        npz.with_suffix(".json").write_text("{not json")
    else:
        npz.unlink()
    third = cached_arrays("t", sources, dec)
    assert dec.calls == 2 and _same(third, arrays)
    assert cached_arrays("t", sources, dec) is not None and dec.calls == 2  # rebuilt entry is read again
    assert not list(cache.glob("*.tmp"))  # no temporary file left behind
    for p in cache.iterdir():
        p.unlink()


@settings(max_examples=20, deadline=None)
@given(
    a=st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=8), min_size=1, max_size=3),
    b=st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=8), min_size=1, max_size=3),
)
def test_key_is_the_set_of_sources(a, b):
    """Equal source digests give one key whatever the order; different ones give different keys."""
    assert cache_key(a) == cache_key(dict(reversed(list(a.items()))))
    assert (cache_key(a) == cache_key(b)) == (a == b)


def test_other_sources_are_a_miss(cache):
    dec = Decoder({"x": np.arange(3)})
    cached_arrays("t", {"f": "1" * 64}, dec)
    cached_arrays("t", {"f": "2" * 64}, dec)
    assert dec.calls == 2


def test_unwritable_cache_still_returns_the_arrays(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # cache_dir() lies under a regular file
    dec = Decoder({"x": np.arange(5, dtype=np.int64)})
    assert _same(cached_arrays("t", {"f": "0"}, dec), dec.arrays)
    assert _same(cached_arrays("t", {"f": "0"}, dec), dec.arrays) and dec.calls == 2


def test_mnist_from_cache_equals_decoding_the_idx_files(cache, monkeypatch):
    """The cached load gives bit-for-bit the tensors of decoding the IDX files, and writes only the cache."""
    monkeypatch.delenv("HAMRAH_DATA", raising=False)
    before = sorted(p.name for p in BUNDLED.iterdir())
    cold, warm = load_mnist(BUNDLED), load_mnist(BUNDLED)
    assert len(list(cache.glob("mnist-*.npz"))) == 1
    assert sorted(p.name for p in BUNDLED.iterdir()) == before  # nothing written beside the data
    ref_x = torch.from_numpy(_read_idx(BUNDLED / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0).unsqueeze(1)
    ref_y = torch.from_numpy(_read_idx(BUNDLED / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    for ds in (cold, warm):
        assert torch.equal(ds.test.x, ref_x) and torch.equal(ds.test.y, ref_y)
        assert ds.train.x.shape == (60_000, 1, 28, 28) and ds.train.x.dtype == torch.float32
    assert torch.equal(cold.train.x, warm.train.x) and torch.equal(cold.train.y, warm.train.y)
    meta = json.loads(next(cache.glob("mnist-*.json")).read_text())
    assert meta["key"] == cache_key(FILES) and meta["sha256"] == locate.sha256_file(next(cache.glob("mnist-*.npz")))


def test_a_corrupt_source_is_refused_even_with_a_cache(cache, tmp_path):
    """The cache never stands in for verification: a bad source file fails although its entry exists."""
    from hamrah.core.errors import DataError

    load_mnist(BUNDLED)
    bad = tmp_path / "mnist"
    bad.mkdir()
    for name in FILES:
        (bad / name).write_bytes((BUNDLED / name).read_bytes())
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="sha256 mismatch"):
        load_mnist(bad)


def test_leaf_from_cache_equals_parsing_the_json(cache):
    """FEMNIST (LEAF JSON, the slowest loader) read back from the cache equals a fresh parse, users and all."""
    from hamrah.data.leaf import load_leaf

    root = BUNDLED.parent / "femnist" / "sample_a"
    assert not list(cache.glob("leaf-femnist-*.npz"))  # an empty cache: the first load parses the JSON
    cold = load_leaf(root)
    assert len(list(cache.glob("leaf-femnist-*.npz"))) == 1
    warm = load_leaf(root)  # read back from the cache
    assert torch.equal(warm.train.x, cold.train.x) and torch.equal(warm.train.y, cold.train.y)
    assert torch.equal(warm.test.x, cold.test.x) and torch.equal(warm.test.y, cold.test.y)
    assert np.array_equal(warm.train_groups, cold.train_groups)
    assert np.array_equal(warm.info["test_groups"], cold.info["test_groups"])
    assert list(warm.group_names) == list(cold.group_names) and warm.num_classes == cold.num_classes == 62
    assert cold.info == {**warm.info, "test_groups": cold.info["test_groups"]}
    flat = load_leaf(root, image_shape=None)  # another shape is another entry, not the 28x28 one
    assert flat.train.x.shape == (len(cold.train), 784) and len(list(cache.glob("leaf-femnist-*.npz"))) == 2


@pytest.mark.parametrize("lie", [{"arrays": 5}, {"arrays": None}, {"arrays": [1, "x"]}, "[" * 100_000])
def test_a_manifest_that_lies_about_its_arrays_is_a_miss(cache, lie):
    """A manifest naming the right key and digest but garbage for its arrays (or nested past Python's
    stack) is decoded again, never a TypeError or RecursionError."""
    dec = Decoder({"x": np.arange(3)})
    cached_arrays("t", {"f": "0" * 64}, dec)
    manifest = next(cache.glob("t-*.json"))
    meta = json.loads(manifest.read_text())
    manifest.write_text(lie if isinstance(lie, str) else json.dumps({**meta, **lie}))
    assert _same(cached_arrays("t", {"f": "0" * 64}, dec), dec.arrays) and dec.calls == 2
