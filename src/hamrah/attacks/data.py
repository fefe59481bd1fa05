"""Data poisoning: label flipping (untargeted and targeted; Tolpegin et al. 2020, *Data Poisoning
Attacks Against Federated Learning Systems*) and a pixel-pattern backdoor trigger (Gu et al. 2017,
*BadNets*; used with model replacement by Bagdasaryan et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_int, check_number
from hamrah.data.federated import ArrayData


def _label(key: str, value: object, num_classes: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_classes:
        raise ConfigError(f"attack {key} = {value!r}: expected a class label in 0..{num_classes - 1}")


@dataclass(frozen=True)
class LabelFlip:
    """Relabel a malicious client's examples.

    Untargeted (``source`` None): every label y becomes C - 1 - y. Targeted: only examples of class
    ``source`` get label ``target`` (e.g. 7 -> 1); its success is the share of test inputs of class
    ``source`` that the global model calls ``target``.

    Example:
        >>> import torch
        >>> d = ArrayData(torch.zeros(3, 1), torch.tensor([7, 2, 9]))
        >>> LabelFlip(source=7, target=1).poison(d, None).y.tolist(), LabelFlip().poison(d, None).y.tolist()
        ([1, 2, 9], [2, 7, 0])
    """

    source: int | None = None
    target: int | None = None
    num_classes: int = 10

    def __post_init__(self) -> None:
        check_int("attack label_flip: num_classes", self.num_classes, 2)
        if (self.source is None) != (self.target is None):
            raise ConfigError("attack label_flip: set both source and target (targeted) or neither (untargeted)")
        if self.source is not None:
            _label("source", self.source, self.num_classes)
            _label("target", self.target, self.num_classes)
            if self.source == self.target:
                raise ConfigError(f"attack label_flip: source = target = {self.source}: nothing would change")

    def poison(self, data: ArrayData, rng: np.random.Generator | None) -> ArrayData:
        """Return ``data`` with flipped labels (deterministic; ``rng`` unused)."""
        if self.source is None:
            return ArrayData(data.x, self.num_classes - 1 - data.y)
        return ArrayData(data.x, torch.where(data.y == self.source, torch.full_like(data.y, self.target), data.y))

    def success_data(self, test: ArrayData) -> ArrayData | None:
        """Return the test inputs of class ``source`` labelled ``target`` (None when untargeted)."""
        if self.source is None:
            return None
        keep = test.y == self.source
        return ArrayData(test.x[keep], torch.full_like(test.y[keep], self.target))


@dataclass(frozen=True)
class PixelBackdoor:
    """Stamp a pixel pattern on a share of a malicious client's images and label them ``target``.

    The pattern is a ``size`` x ``size`` checkerboard ``margin`` pixels from the bottom-right corner,
    on pixels set to ``value`` (white on MNIST's [0, 1] images), the rest of the square to 0. Keeping
    clean examples beside the triggered ones (``fraction`` < 1) keeps the main task accurate, as
    Bagdasaryan et al. do. Success: the share of triggered test images whose true label is not
    ``target`` that the model calls ``target``.

    Example:
        >>> import torch
        >>> bd = PixelBackdoor(target=0, fraction=1.0)
        >>> out = bd.poison(ArrayData(torch.zeros(2, 1, 28, 28), torch.tensor([3, 5])), np.random.default_rng(0))
        >>> out.y.tolist(), float(out.x[0, 0, -2, -2])
        ([0, 0], 1.0)
    """

    target: int
    fraction: float = 0.5
    size: int = 4
    margin: int = 1
    value: float = 1.0
    num_classes: int = 10

    def __post_init__(self) -> None:
        check_int("attack backdoor: num_classes", self.num_classes, 2)
        _label("target", self.target, self.num_classes)
        check_number("attack backdoor: value", self.value)  # the trigger's pixel value: finite
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) or not 0 < self.fraction <= 1:
            raise ConfigError(f"attack backdoor fraction = {self.fraction!r}: expected a number in (0, 1]")
        for key in ("size", "margin"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "size" else 0):
                raise ConfigError(f"attack backdoor {key} = {v!r}: expected an integer >= {1 if key == 'size' else 0}")

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Return a copy of images ``x`` (``[N, ..., H, W]``) with the trigger stamped on."""
        out = x.clone()
        h, w = x.shape[-2], x.shape[-1]
        r0, c0 = h - self.margin - self.size, w - self.margin - self.size
        if r0 < 0 or c0 < 0:
            raise ConfigError(
                f"attack backdoor: a {self.size}px trigger {self.margin}px from the corner does not fit {h}x{w} images"
            )
        ii, jj = torch.meshgrid(torch.arange(self.size), torch.arange(self.size), indexing="ij")
        pattern = ((ii + jj) % 2 == 0).to(x.dtype) * self.value
        out[..., r0 : r0 + self.size, c0 : c0 + self.size] = pattern
        return out

    def poison(self, data: ArrayData, rng: np.random.Generator) -> ArrayData:
        """Return ``data`` with ``fraction`` of its examples (drawn from ``rng``) triggered and relabelled."""
        n = len(data)
        count = max(int(round(self.fraction * n)), 1) if n else 0
        idx = torch.from_numpy(np.sort(rng.choice(n, size=count, replace=False))).long()
        x, y = data.x.clone(), data.y.clone()
        x[idx] = self.stamp(x[idx])
        y[idx] = self.target
        return ArrayData(x, y)

    def success_data(self, test: ArrayData) -> ArrayData:
        """Return the triggered test images whose true label is not ``target``, labelled ``target``."""
        keep = test.y != self.target
        return ArrayData(self.stamp(test.x[keep]), torch.full_like(test.y[keep], self.target))


@dataclass(frozen=True)
class DistributedBackdoor:
    """DBA (Xie, Huang, Chen & Li 2020, *DBA: Distributed Backdoor Attacks against Federated
    Learning*, ICLR): the global trigger is split into ``parts`` local triggers; each malicious client
    stamps only its own part (part = client id mod ``parts``) on ``fraction`` of its images and labels
    them ``target``. Success is measured with the full global trigger, which no single attacker used.

    The trigger follows the paper's MNIST layout: ``parts`` horizontal bars of 1 x ``size`` pixels set
    to ``value``, two per row, ``gap`` pixels apart, starting ``shift`` pixels from the top-left corner.

    Example:
        >>> import torch
        >>> dba = DistributedBackdoor(target=0, fraction=1.0)
        >>> x = dba.stamp_part(torch.zeros(1, 1, 28, 28), 1)
        >>> int(x.sum()), float(dba.stamp(torch.zeros(1, 1, 28, 28)).sum())
        (4, 16.0)
    """

    target: int
    fraction: float = 0.5
    parts: int = 4
    size: int = 4
    gap: int = 2
    shift: int = 1
    value: float = 1.0
    num_classes: int = 10

    def __post_init__(self) -> None:
        PixelBackdoor(self.target, self.fraction, 1, 0, self.value, self.num_classes)  # same checks
        for key, low in (("parts", 1), ("size", 1), ("gap", 0), ("shift", 0)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"attack dba {key} = {v!r}: expected an integer >= {low}")

    def _cells(self, part: int) -> tuple[int, int]:
        row, col = divmod(part, 2)
        return self.shift + row * self.gap, self.shift + col * (self.size + self.gap)

    def stamp_part(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """Return a copy of images ``x`` with local trigger ``part`` stamped on."""
        r, c = self._cells(part)
        h, w = x.shape[-2], x.shape[-1]
        if r >= h or c + self.size > w:
            raise ConfigError(
                f"attack dba: trigger part {part} at row {r}, columns {c}..{c + self.size - 1} "
                f"does not fit {h}x{w} images"
            )
        out = x.clone()
        out[..., r, c : c + self.size] = self.value
        return out

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Return a copy of images ``x`` with the global trigger (every part) stamped on."""
        for part in range(self.parts):
            x = self.stamp_part(x, part)
        return x

    def poison(self, data: ArrayData, rng: np.random.Generator) -> ArrayData:
        """Return ``data`` with part 0 of the trigger (use :meth:`poison_client` for a client's own part)."""
        return self.poison_client(0, data, rng)

    def poison_client(self, client_id: int, data: ArrayData, rng: np.random.Generator) -> ArrayData:
        """Return client ``client_id``'s data with ``fraction`` of it carrying its local trigger, relabelled."""
        n = len(data)
        count = max(int(round(self.fraction * n)), 1) if n else 0
        idx = torch.from_numpy(np.sort(rng.choice(n, size=count, replace=False))).long()
        x, y = data.x.clone(), data.y.clone()
        x[idx] = self.stamp_part(x[idx], int(client_id) % self.parts)
        y[idx] = self.target
        return ArrayData(x, y)

    def success_data(self, test: ArrayData) -> ArrayData:
        """Return the test images whose true label is not ``target``, with the global trigger, labelled ``target``."""
        keep = test.y != self.target
        return ArrayData(self.stamp(test.x[keep]), torch.full_like(test.y[keep], self.target))
