"""Small, seeded Paillier keys shared by the HE tests (1024 bits: fast, not for real use)."""

from __future__ import annotations

import numpy as np
import pytest

from hamrah.he import paillier_keygen


@pytest.fixture(scope="session")
def keys():
    return paillier_keygen(1024, np.random.default_rng(1234))


@pytest.fixture(scope="session")
def other_keys():
    return paillier_keygen(1024, np.random.default_rng(99))
