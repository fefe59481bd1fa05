"""Arrays a party saved (``model.npz``, checkpoints): the one lookup that names what is missing."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hamrah.core.errors import DataError


def need(arrays: Mapping[str, np.ndarray], key: str, what: str) -> np.ndarray:
    """Return ``arrays[key]``, or refuse ``arrays`` as not being ``what``.

    Raises:
        DataError: naming the missing array and what was expected.
    """
    if key not in arrays:
        raise DataError(
            f"model: no array {key!r}, so not a {what} (expected the model.npz or checkpoint `hamrah party` "
            "wrote for this protocol and role)"
        )
    return np.asarray(arrays[key])


__all__ = ["need"]
