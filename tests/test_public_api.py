"""Every name a package lists in ``__all__`` exists and can be imported from it."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "hamrah.algorithms",
    "hamrah.models",
    "hamrah.simulation",
    "hamrah.core",
    "hamrah.data",
    "hamrah.experiments",
    "hamrah.aggregation",
    "hamrah.attacks",
    "hamrah.compression",
    "hamrah.privacy",
    "hamrah.secagg",
    "hamrah.he",
    "hamrah.transport",
    "hamrah.server",
    "hamrah.device",
    "hamrah.vertical",
    "hamrah.pipeline",
    "hamrah.loop",
    "hamrah.observe",
    "hamrah.task",
    "hamrah",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_importable(package):
    mod = importlib.import_module(package)
    names = getattr(mod, "__all__", None)
    assert names, f"{package} has no __all__"
    assert len(names) == len(set(names)), f"{package}.__all__ lists a name twice"
    for name in names:
        assert hasattr(mod, name), f"{package}.__all__ names {name!r}, which does not exist"
        exec(f"from {package} import {name}", {})


def test_star_import():
    for package in PACKAGES:
        ns: dict = {}
        exec(f"from {package} import *", ns)
        assert set(importlib.import_module(package).__all__) <= set(ns)


def test_version():
    import hamrah

    assert isinstance(hamrah.__version__, str) and hamrah.__version__.count(".") == 2
