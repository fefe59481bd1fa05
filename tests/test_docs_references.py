"""What the docs cite exists: test files, test functions, benchmark scripts, their flags, results files.

Cheap, nothing is run: ``docs/*.md`` and ``README.md`` are parsed for ``tests/<path>.py`` (and a bare
``test_<name>.py``: some test file of that name), ``<file>.py::test_<name>`` (the function is defined in
that file, or for a bare name in one of that name), ``pytest <file>.py -k <word>`` (a test there has the
word in its name), a backticked ``test_<words>`` name (defined somewhere under ``tests/``),
``benchmarks/<script>.py`` with the ``--flags`` of its command line (each is spelled in the script's
source), ``benchmarks/results/...``/``docs/results/...`` files (each is committed), backticked
``src/``, ``configs/``, ``examples/``, ``scripts/`` and ``data/`` paths (each exists) and backticked
``hamrah.<module>[.<name>]`` (it imports; the only check that imports anything).
"""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
TESTS = ROOT / "tests"

# The test file `hamrah new` writes into a user's project (docs/tasks.md).
GENERATED = {"test_my_clinic.py"}
# Outputs the docs name as still to be produced by the command printed next to them (no run yet).
NOT_YET_RUN = {"benchmarks/results/ftrl_shakespeare.json"}

TEST_FILE = re.compile(r"(?<![\w/.])((?:tests/)?(?:[\w]+/)*test_\w+\.py)(?:::(\w+))?")
TEST_NAME = re.compile(r"`(test_[a-z0-9]+(?:_[a-z0-9]+){2,})`")
SCRIPT = re.compile(r"(?<![\w/])benchmarks/(\w+\.py)([^\n`|]*)")
FLAG = re.compile(r"(?<![\w-])(--[A-Za-z0-9][\w-]*)")
SELECT = re.compile(r"pytest[^`|\n]*?((?:tests/)?(?:\w+/)*test_\w+\.py)[^`|\n]*?\s-k\s+[\"']?(\w+)[\"']?(?=[\s`|]|$)")
REPO_PATH = re.compile(r"`((?:src|configs|examples|scripts|data)/[\w./-]+?)/?`")
DOTTED = re.compile(r"`(hamrah(?:\.(?!v\d+`)\w+)+)`")  # not the wire protocol's package, hamrah.v1
RESULT = re.compile(r"(?<![\w/])((?:benchmarks|docs)/results/[\w.\-/]*\w)(?![\w.\-/<*])")  # not a pattern's stem


def _text(doc: Path) -> str:
    """The doc with shell line continuations joined, so a command's flags stay on its line."""
    return re.sub(r"\\\n\s*", " ", doc.read_text(encoding="utf-8"))


def _where(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


@cache
def _test_files() -> dict[str, list[Path]]:
    by_name: dict[str, list[Path]] = {}
    for path in TESTS.rglob("test_*.py"):
        by_name.setdefault(path.name, []).append(path)
    return by_name


@cache
def _functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


@cache
def _all_test_functions() -> frozenset[str]:
    return frozenset().union(*(_functions(p) for paths in _test_files().values() for p in paths))


def _candidates(ref: str) -> list[Path]:
    """The files a reference may mean: its path under the root, or each test file ending in it."""
    if ref.startswith("tests/"):
        return [ROOT / ref] if (ROOT / ref).is_file() else []
    return [p for p in _test_files().get(Path(ref).name, []) if p.as_posix().endswith("/" + ref)]


def _test_file_problems() -> list[str]:
    problems = []
    for doc in DOCS:
        for m in TEST_FILE.finditer(_text(doc)):
            ref, name = m.group(1), m.group(2)
            paths = _candidates(ref)
            if not paths and ref not in GENERATED:
                problems.append(f"{_where(doc)}: {ref} is not a test file under tests/")
            elif paths and name is not None and not any(name in _functions(p) for p in paths):
                problems.append(f"{_where(doc)}: {ref} has no function {name}")
        for ref, word in SELECT.findall(_text(doc)):
            if not any(word in name for p in _candidates(ref) for name in _functions(p) if name.startswith("test")):
                problems.append(f"{_where(doc)}: {ref} -k {word} selects no test")
        for name in TEST_NAME.findall(_text(doc)):
            if name not in _all_test_functions():
                problems.append(f"{_where(doc)}: no test function {name} under tests/")
    return problems


def _script_problems() -> list[str]:
    problems = []
    for doc in DOCS:
        for m in SCRIPT.finditer(_text(doc)):
            script = ROOT / "benchmarks" / m.group(1)
            if not script.is_file():
                problems.append(f"{_where(doc)}: benchmarks/{m.group(1)} does not exist")
                continue
            source = script.read_text(encoding="utf-8")
            for flag in FLAG.findall(m.group(2)):
                if f'"{flag}"' not in source and f"'{flag}'" not in source:
                    problems.append(f"{_where(doc)}: benchmarks/{m.group(1)} has no option {flag}")
    return problems


def _result_problems() -> list[str]:
    problems = []
    for doc in DOCS:
        for ref in REPO_PATH.findall(_text(doc)):
            if not (ROOT / ref).exists():
                problems.append(f"{_where(doc)}: {ref} does not exist")
        for ref in RESULT.findall(_text(doc)):
            if ref not in NOT_YET_RUN and not (ROOT / ref).exists():
                problems.append(f"{_where(doc)}: {ref} is not committed")
    return problems


def _resolves(name: str) -> bool:
    """Whether ``hamrah.a.b.C`` names a module, or an attribute of the longest importable module prefix."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _name_problems() -> list[str]:
    return [
        f"{_where(doc)}: {name} does not resolve (no such module or attribute)"
        for doc in DOCS
        for name in DOTTED.findall(_text(doc))
        if not _resolves(name)
    ]


def _report(problems: list[str]) -> None:
    if problems:
        pytest.fail("\n".join(sorted(set(problems))), pytrace=False)


def test_every_cited_test_file_and_test_function_exists():
    _report(_test_file_problems())


def test_every_cited_benchmark_script_and_its_options_exist():
    _report(_script_problems())


def test_every_cited_results_file_and_repository_path_exists():
    _report(_result_problems())


def test_every_cited_hamrah_module_and_name_exists():
    _report(_name_problems())


def test_the_parser_finds_references_and_would_flag_a_stale_one(tmp_path, monkeypatch):
    """The checks see the docs' references (not vacuous) and name a renamed test, script flag and file."""
    assert len(list(TEST_FILE.finditer("".join(_text(d) for d in DOCS)))) > 50
    stale = tmp_path / "stale.md"
    stale.write_text(
        "`tests/test_tooling.py::test_gone`, `tests/nowhere/test_none.py`, `test_no_such_test_here`,\n"
        "`python -m pytest -q tests/test_tooling.py -k no_such_word`,\n"
        "`python benchmarks/bench_he.py --no-such-flag`, `benchmarks/missing.py`, "
        "`benchmarks/results/none.json`, `hamrah.data.no_such_loader`, `configs/none.toml`\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(f"{__name__}.DOCS", [stale])
    monkeypatch.setattr(f"{__name__}._where", lambda doc: doc.name)
    found = _test_file_problems() + _script_problems() + _result_problems() + _name_problems()
    assert found == [
        "stale.md: tests/test_tooling.py has no function test_gone",
        "stale.md: tests/nowhere/test_none.py is not a test file under tests/",
        "stale.md: tests/test_tooling.py -k no_such_word selects no test",
        "stale.md: no test function test_no_such_test_here under tests/",
        "stale.md: benchmarks/bench_he.py has no option --no-such-flag",
        "stale.md: benchmarks/missing.py does not exist",
        "stale.md: configs/none.toml does not exist",
        "stale.md: benchmarks/results/none.json is not committed",
        "stale.md: hamrah.data.no_such_loader does not resolve (no such module or attribute)",
    ]
