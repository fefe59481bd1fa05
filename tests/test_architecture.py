"""The layering of docs/design.md holds: imports point down, algorithms and core do no network I/O."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    beside = Path(sys.executable).parent / "lint-imports"
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert found, "import-linter is a test dependency: pip install -e '.[test]'"
    return found


def test_import_contracts_hold():
    proc = subprocess.run(
        [_lint_imports(), "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


MAX_MODULE_LINES = 400  # issue 11: no module over ~400 lines; split by what a part does, not by line count


def test_no_module_is_over_the_line_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "src" / "hamrah").rglob("*.py")
        if "proto" not in p.parts and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
