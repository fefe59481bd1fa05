"""A folder of images by class as examples: ``root/<class>/*.png`` (or ``root/<split>/<class>/...``).

Each image becomes a float32 ``[C, H, W]`` field ``image`` in ``[0, 1]`` (the layout the built-in CNNs
take) and its folder an int64 ``label`` whose categories are the class names. With split folders
(``train/``, ``test/``) the classes are the union over every split, so the codes agree between them.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hamrah.core.errors import DataError
from hamrah.data.examples import Examples
from hamrah.data.schema import Field, Schema

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "test", "valid", "validation", "val")


@dataclass(frozen=True)
class ImageSpec:
    """How to read the images.

    Attributes:
        split: the split folder to read (``"train"``, ``"test"``), or None when there is none.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (grey, 1 channel).
        size: resize every image to (height, width), or None: every image must already share one size.
        classes: the class names in label order (a task's declared classes, so that every device
            agrees), or None: the sorted class folders.
    """

    split: str | None = None
    mode: str = "RGB"
    size: tuple[int, int] | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("RGB", "L"):
            raise DataError(f"image mode {self.mode!r}: expected 'RGB' or 'L'")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise DataError(f"image size {self.size}: expected (height, width), both positive")


def load_images(root: str | os.PathLike, spec: ImageSpec = ImageSpec()) -> Examples:
    """Load a folder of images by class.

    Args:
        root: a folder of class folders, or of split folders holding class folders.
        spec: the split, colour mode and size.

    Returns:
        Examples with fields ``image`` (float32 ``[C, H, W]``, values in [0, 1]) and ``label``.

    Raises:
        DataError: no such folder, split folders but no split chosen (or an unknown one), no class
            folders, a file that is not a readable image, or images of different sizes without
            ``size``; each names the file or folder and what was expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected a folder of class folders)")
    splits = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name in SPLITS)
    if splits:
        if spec.split not in splits:
            raise DataError(
                f"{root}: has split folders {', '.join(splits)}; choose one with split= (got {spec.split!r})"
            )
        classes = sorted({c.name for s in splits for c in (root / s).iterdir() if c.is_dir()})
        folder = root / spec.split
    else:
        if spec.split is not None:
            raise DataError(f"{root}: no split folder {spec.split!r} (expected {root}/{spec.split}/<class>/)")
        classes = sorted(c.name for c in root.iterdir() if c.is_dir())
        folder = root
    if spec.classes is not None:
        extra = sorted(set(classes) - set(spec.classes))
        if extra:
            raise DataError(
                f"{root}: class folder {extra[0]!r} is not a declared class (expected one of {', '.join(spec.classes)})"
            )
        classes = list(spec.classes)
    if not classes:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>.png)")
    files, labels = [], []
    for k, name in enumerate(classes):
        d = folder / name
        found = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []
        files += found
        labels += [k] * len(found)
    if not files:
        raise DataError(f"{folder}: no images (expected {', '.join(IMAGE_SUFFIXES)} files in class folders)")
    pixels = _decode_all(files, spec)
    schema = Schema(
        (Field("image", "float32", pixels.shape[1:]), Field("label", "int64", categories=tuple(classes))), label="label"
    )
    return Examples(schema, {"image": pixels, "label": np.array(labels, np.int64)}, source=str(folder))


def _decode_all(files: list[Path], spec: ImageSpec) -> np.ndarray:
    first = decode_image(files[0].read_bytes(), spec, str(files[0]))
    out = np.empty((len(files), *first.shape), np.float32)
    out[0] = first
    for i, f in enumerate(files[1:], 1):
        try:
            img = decode_image(f.read_bytes(), spec, str(f))
        except OSError as e:
            raise DataError(f"{f}: cannot read ({e})") from None
        if img.shape != first.shape:
            raise DataError(
                f"{f}: image of {img.shape[1]}x{img.shape[2]} pixels (height x width), expected {first.shape[1]}x"
                f"{first.shape[2]} like {files[0].name} (or resize all with image_size=(height, width))"
            )
        out[i] = img
    return out


def decode_image(data: bytes, spec: ImageSpec, where: str) -> np.ndarray:
    """Decode one encoded image (PNG, JPEG, ...) into float32 ``[C, H, W]`` in [0, 1].

    Raises:
        DataError: the bytes are not an image Pillow can decode (names ``where``).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert(spec.mode)
            if spec.size is not None:
                im = im.resize((spec.size[1], spec.size[0]))
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{where}: not a readable image ({e})") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return arr.transpose(2, 0, 1).astype(np.float32) / 255.0
