"""CIFAR-10 (Krizhevsky 2009) from a JPEG copy: slightly lossy (quality ~75), not the original pixels.

Two sources: the bundled subset ``data/cifar10/cifar10_jpeg_subset.npz`` (500 train + 100 test images
per class, the original JPEG bytes, sha256-verified), or an explicit path to the full
``cifar10_jpeg_*.tar.gz`` (``cifar10_jpeg/{train,test}/<class>/NNNN.jpg``, 50,000 + 10,000).
Pixels are scaled to [0, 1] and normalised per channel with the training split's mean and std.
Decoding uses Pillow (installed with matplotlib).
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from hamrah.core.errors import DataError
from hamrah.data.federated import ArrayData, Dataset
from hamrah.data.locate import candidate_dirs, sha256_file

SUBSET = "cifar10_jpeg_subset.npz"
SUBSET_SHA256 = "764ed24a0bc38007801ce4ef4980c8fc5e5a97bb01ecc0bdc0c2781d24182884"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _decode(blobs: list[bytes]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        raise DataError("CIFAR-10 JPEGs need Pillow to decode (pip install pillow)") from None
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


def _from_npz(path: Path) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    if sha256_file(path) != SUBSET_SHA256:
        raise DataError(f"{path}: sha256 mismatch (expected {SUBSET_SHA256[:12]}...)")
    z = np.load(path)
    raw, off = z["jpeg"].tobytes(), z["offsets"]
    return [raw[off[i] : off[i + 1]] for i in range(len(off) - 1)], z["labels"], z["test"]


def _from_tar(path: Path) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    blobs, labels, test = [], [], []
    with tarfile.open(path) as tar:
        for m in sorted((m for m in tar.getmembers() if m.name.endswith(".jpg")), key=lambda m: m.name):
            parts = m.name.split("/")
            if len(parts) < 3 or parts[-2] not in CLASSES or parts[-3] not in ("train", "test"):
                continue
            blobs.append(tar.extractfile(m).read())
            labels.append(CLASSES.index(parts[-2]))
            test.append(parts[-3] == "test")
    if not blobs:
        raise DataError(f"{path}: no cifar10_jpeg/{{train,test}}/<class>/*.jpg members")
    return blobs, np.array(labels), np.array(test)


def _source(path: str | os.PathLike | None) -> Path:
    if path is not None and Path(path).is_file():
        return Path(path)
    tried = []
    for d in candidate_dirs("cifar10", path):
        tried.append(str(d / SUBSET))
        if (d / SUBSET).is_file():
            return d / SUBSET
    raise DataError("CIFAR-10 not found; looked in: " + ", ".join(tried))


def load_cifar10(path: str | os.PathLike | None = None) -> Dataset:
    """Load CIFAR-10 (the bundled JPEG subset, or the full JPEG tar.gz at ``path``) as [N, 3, 32, 32].

    Raises:
        DataError: no copy found, a corrupt subset, a damaged archive, or a tar without CIFAR-10 JPEGs.
    """
    src = _source(path)
    try:
        blobs, labels, test = _from_npz(src) if src.suffix == ".npz" else _from_tar(src)
        pixels = _decode(blobs)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # a damaged archive or JPEG: one line, no traceback
        why = "not a tar archive" if isinstance(e, tarfile.ReadError) else " ".join(str(e).split())
        raise DataError(f"{src}: cannot read CIFAR-10 ({why}); expected the cifar10_jpeg tar.gz") from None
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    train = ~test
    mean = x[train].mean(dim=(0, 2, 3), keepdim=True)
    std = x[train].std(dim=(0, 2, 3), keepdim=True)
    x = (x - mean) / std
    y = torch.from_numpy(labels).long()
    tr, te = torch.from_numpy(train), torch.from_numpy(test)
    return Dataset(
        "cifar10",
        ArrayData(x[tr].contiguous(), y[tr]),
        ArrayData(x[te].contiguous(), y[te]),
        10,
        info={"source": str(src), "lossy": "JPEG re-encoding (quality ~75) of CIFAR-10"},
    )
