"""MNIST from the official IDX files, sha256-verified.

Looked up in: an explicit folder, ``$HAMRAH_DATA/mnist``, the copy bundled in the repo
(``data/mnist``), the user cache (``~/.cache/hamrah/mnist``); when none holds valid files it
downloads into the cache and verifies, and if that fails one error lists every place tried.

The source files are verified on every load; their decoded pixels and labels are kept in the
decoded-array cache (:func:`hamrah.data.locate.cached_arrays`), so only the first load gunzips them.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from hamrah.core.errors import DataError
from hamrah.data.federated import ArrayData, Dataset
from hamrah.data.locate import cache_dir, cached_arrays, candidate_dirs, sha256_file

FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")


def _check_folder(folder: Path) -> str | None:
    """Return why ``folder`` does not hold valid MNIST files, or None if it does."""
    for name, digest in FILES.items():
        path = folder / name
        if not path.is_file():
            return f"{path}: missing"
        if sha256_file(path) != digest:
            return f"{path}: sha256 mismatch (corrupt or a different file; expected {digest[:12]}...)"
    return None


def _download(folder: Path) -> str | None:
    """Download and verify the four files into ``folder``; return an error text or None."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, digest in FILES.items():
        if (folder / name).is_file() and sha256_file(folder / name) == digest:
            continue
        for mirror in MIRRORS:
            try:
                fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
                os.close(fd)
                urllib.request.urlretrieve(mirror + name, tmp)
                if sha256_file(Path(tmp)) == digest:
                    os.replace(tmp, folder / name)
                    break
                os.unlink(tmp)
            except OSError:
                Path(tmp).unlink(missing_ok=True)
        else:
            return f"download of {name} failed from {', '.join(MIRRORS)}"
    return None


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: holds {data.size} values, header says {tuple(dims)}")
    return data.reshape(tuple(dims))


def find_mnist(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return a folder holding the four verified MNIST files.

    Raises:
        DataError: listing every place looked at and why each failed.
    """
    tried = []
    for folder in candidate_dirs("mnist", path):
        problem = _check_folder(folder)
        if problem is None:
            return folder
        tried.append(problem)
    if download and path is None:
        target = cache_dir() / "mnist"
        problem = _download(target)
        if problem is None and _check_folder(target) is None:
            return target
        tried.append(problem or f"{target}: download did not verify")
    raise DataError(
        "MNIST not found (looked in: " + "; ".join(tried) + "); expected the four IDX .gz files in one of "
        "these folders, HAMRAH_DATA set to a folder holding mnist/, or an explicit path"
    )


@contextlib.contextmanager
def small_pages() -> Iterator[None]:
    """Let numpy allocate the arrays made inside in 4 KiB pages. For a large array numpy asks the kernel
    for transparent huge pages, and where memory is fragmented the kernel compacts it at the first write:
    MNIST's 188 MB training images took 0.03-1.3 s to decode that way on the 2-core machine, 0.09-0.11 s
    in small pages (``benchmarks/bench_startup_parts.py``). A no-op where numpy has no such switch."""
    core = getattr(np, "_core", None) or getattr(np, "core", None)  # numpy 2 / numpy 1
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    before = switch(False) if switch is not None else None
    try:
        yield
    finally:
        if switch is not None:
            switch(before)


def load_mnist(path: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """Load MNIST as float32 images in [0, 1], shape ``[N, 1, 28, 28]``, and int64 labels.

    Example:
        >>> ds = load_mnist()
        >>> len(ds.train), len(ds.test)
        (60000, 10000)
    """
    folder = find_mnist(path, download=download)
    raw = cached_arrays("mnist", FILES, lambda: {name.split("-idx")[0]: _read_idx(folder / name) for name in FILES})

    def images(split: str) -> torch.Tensor:  # bytes -> [0, 1] in one pass (IEEE division: as astype(float32) / 255)
        with small_pages():
            return torch.from_numpy(np.divide(raw[f"{split}-images"], np.float32(255.0), dtype=np.float32)).unsqueeze(1)

    def labels(split: str) -> torch.Tensor:
        return torch.from_numpy(raw[f"{split}-labels"].astype(np.int64))

    train = ArrayData(images("train"), labels("train"))
    test = ArrayData(images("t10k"), labels("t10k"))
    for split, d in (("train", train), ("test", test)):
        if d.x.shape[0] != d.y.shape[0]:
            raise DataError(f"MNIST {split}: {d.x.shape[0]} images but {d.y.shape[0]} labels in {folder}")
    return Dataset("mnist", train, test, num_classes=10, info={"folder": str(folder)})
