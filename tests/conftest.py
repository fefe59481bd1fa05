"""Shared fixtures: MNIST is loaded once per test session (about 2 s)."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest

from hamrah.data import load_mnist


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collect only test modules under tests/: ``--doctest-modules`` (meant for src/hamrah's examples) would
    otherwise import every helper and fixture generator here, some of which need tools that are not installed
    (tests/data/fixtures/make_hf_tiny.py needs `datasets`)."""
    if collection_path.suffix != ".py" or collection_path.name == "conftest.py":
        return None
    if any(fnmatch(collection_path.name, pattern) for pattern in config.getini("python_files")):
        return None
    return True


@pytest.fixture(scope="session")
def mnist():
    return load_mnist(download=False)
