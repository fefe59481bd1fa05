"""Shared fixtures: MNIST is loaded once per test session (about 2 s); a local Ray instance per module."""

from __future__ import annotations

import os
from fnmatch import fnmatch
from pathlib import Path

import pytest
from hypothesis import settings

from hamrah.data import load_mnist

# Property tests draw the same examples on every run (a seed per test), so the README's test command gives
# the same result twice; HAMRAH_HYPOTHESIS=explore draws fresh examples each run to look for new failures
# (docs/development.md).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HAMRAH_HYPOTHESIS", "repeatable"))


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


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for a module's tests (mark the module ``xdist_group("ray")``)."""
    ray = pytest.importorskip("ray")
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as e:  # Ray waits a fixed time for its raylet and GCS: a busy CI machine can miss it
            ray.shutdown()  # ("timed out during startup", "Timed out waiting for file .../gcs_server_port_...")
            if "timed out" not in str(e).lower() or attempt == 2:
                raise
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures(...)``): torch's
    thread pool only adds contention on the shared 2-core machines."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
