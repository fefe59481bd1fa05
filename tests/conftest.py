"""Shared fixtures: MNIST is loaded once per test session (about 2 s)."""

from __future__ import annotations

import pytest

from hamrah.data import load_mnist


@pytest.fixture(scope="session")
def mnist():
    return load_mnist(download=False)
