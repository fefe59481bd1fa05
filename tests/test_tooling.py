"""The tree stays linted, formatted, type-checked and its docstring examples run (issue 11, item 6).

ruff and mypy run as subprocesses with the project's configuration (``pyproject.toml``: ``[tool.ruff]``,
``[tool.mypy]``) and a failure shows their output: the tree passes ``ruff check`` and ``ruff format --check``,
the configuration parses and selects what it says, mypy passes on the configured packages, and every ``>>>``
example is collected by pytest.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LINTED = ("src", "tests", "benchmarks", "examples")


def _config() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` (the tools of this interpreter's environment) and capture its output."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=240)


def _report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"`{' '.join(proc.args[2:])}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


def _assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Fail with the tool's own output (no Python traceback) unless it exited 0."""
    if proc.returncode != 0:
        pytest.fail(_report(proc), pytrace=False)


def test_ruff_check_passes_on_the_tree():
    _assert_ok(_run("ruff", "check", *LINTED))


def test_ruff_format_leaves_the_tree_unchanged():
    _assert_ok(_run("ruff", "format", "--check", *LINTED))


def test_ruff_config_flags_what_it_selects(tmp_path):
    """The configuration parses and is the one in force: its rules fire, its ignores and ruff's defaults do not."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import sys\nimport os\nfrom typing import Optional\n\n\n"
        "def f(x: Optional[int], acc=[]):\n    try:\n        acc = [x] + acc\n    except Exception:\n        pass\n"
        "    return x == None  # " + "." * 100 + "\n"
    )
    proc = _run("ruff", "check", "--no-cache", "--config", str(PYPROJECT), "--output-format", "concise", str(bad))
    assert proc.returncode == 1, _report(proc)
    reported = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith(str(bad))}
    assert {"F401", "I001", "UP045", "B006", "E711", "E501"} <= reported, _report(proc)
    # RUF005 and SIM105 are ignored with a reason; BLE001 and S110 are ruff defaults the selection replaces
    assert not reported & {"RUF005", "SIM105", "BLE001", "S110"}, _report(proc)


def test_ruff_format_config_keeps_the_house_style(tmp_path):
    """Double quotes, and a 120-character line stays on one line (the code base's style)."""
    src = tmp_path / "style.py"
    long_call = "x = f(" + ", ".join(["'aaaaaaaaaa'"] * 8) + ")\n"  # 117 characters: one line at 120, not at 88
    src.write_text(long_call)
    _assert_ok(_run("ruff", "format", "--no-cache", "--config", str(PYPROJECT), str(src)))
    assert src.read_text() == long_call.replace("'", '"')


@pytest.mark.slow
def test_mypy_passes_on_the_configured_packages():
    packages = _config()["tool"]["mypy"]["packages"]
    assert {"hamrah.core", "hamrah.aggregation", "hamrah.pipeline", "hamrah.algorithms"} <= set(packages)
    proc = _run("mypy")  # the packages and flags come from [tool.mypy]
    _assert_ok(proc)
    assert proc.stdout.startswith("Success"), _report(proc)


def test_mypy_config_is_strict(tmp_path):
    """An unannotated function and a None passed as an int fail under the project's flags."""
    mod = tmp_path / "loose.py"
    mod.write_text("def half(x):\n    return x / 2\n\n\ndef twice(x: int) -> int:\n    return 2 * x\n\n\ntwice(None)\n")
    proc = _run("mypy", "--config-file", str(PYPROJECT), str(mod))  # the stdlib's types from the shared cache
    assert proc.returncode == 1, _report(proc)
    assert "[no-untyped-def]" in proc.stdout and "[arg-type]" in proc.stdout, _report(proc)


def _files_with_examples(folder: Path) -> list[Path]:
    """The ``.py`` files under ``folder`` with a ``>>>`` example in a docstring."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [
            tree,
            *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))),
        ]
        if any(">>>" in (ast.get_docstring(n, clean=False) or "") for n in nodes):
            found.append(path)
    return found


def test_every_docstring_example_is_collected_by_pytest():
    """pytest runs doctests (--doctest-modules) over its testpaths; every example lies under one."""
    pytest_cfg = _config()["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in pytest_cfg["addopts"].split()
    collected = [ROOT / p for p in pytest_cfg["testpaths"]]
    examples = [p for folder in ("src", "benchmarks") for p in _files_with_examples(ROOT / folder)]
    assert examples, "expected docstring examples in src/hamrah"
    missed = [str(p.relative_to(ROOT)) for p in examples if not any(c in p.parents for c in collected)]
    assert not missed, f"examples pytest does not run (outside testpaths {pytest_cfg['testpaths']}): {missed}"
