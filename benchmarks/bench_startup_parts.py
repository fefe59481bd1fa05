"""Pieces of a `hamrah run` outside its rounds, two ways each, interleaved.

1. Interpreter exit with torch loaded: ``python -c "import torch"`` as a whole process, as is, with
   ``gc.freeze()`` at the end (what ``hamrah.cli.entry`` does) and with ``os._exit(0)`` (the floor).
2. The whole ``hamrah run configs/mnist_2nn_50.toml --no-plot`` through ``main()`` (before) and through the
   console entry (after): time outside the rounds = process time - the summary's ``wall_s``.
3. MNIST's bytes to float32 in one ``np.divide`` pass, into an array numpy allocates as it likes (it
   asks for transparent huge pages), one numpy allocates in 4 KiB pages (``mnist.small_pages``, what
   ``load_mnist`` does since 2026-12-05) and one torch allocates (4 KiB pages), in fresh interpreters,
   on the real training images.

    python benchmarks/bench_startup_parts.py --repeats 3    # -> benchmarks/results/startup_parts.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXITS = {
    "as is": "import torch",
    "gc.freeze()": "import torch, gc; gc.freeze()",
    "os._exit": "import torch, os; os._exit(0)",
}
RUNS = {
    "main()": "import sys; from hamrah.cli import main; sys.exit(main())",
    "entry()": "from hamrah.cli import entry; entry()",
}
DECODE = """
import sys, time, numpy as np, torch
from hamrah.data.locate import cached_arrays
from hamrah.data.mnist import FILES, find_mnist
find_mnist(None, download=False)
raw = cached_arrays("mnist", FILES, None)["train-images"]
t = time.perf_counter()
if sys.argv[1] == "numpy":
    x = np.divide(raw, np.float32(255.0), dtype=np.float32)
elif sys.argv[1] == "numpy, small pages":
    from hamrah.data.mnist import small_pages
    with small_pages():
        x = np.divide(raw, np.float32(255.0), dtype=np.float32)
else:
    x = torch.empty(raw.shape, dtype=torch.float32)
    np.divide(raw, np.float32(255.0), out=x.numpy(), dtype=np.float32)
print(time.perf_counter() - t)
"""


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup_parts.json"))
    args = ap.parse_args()
    out: dict = {"exit_s": {k: [] for k in EXITS}, "outside_rounds_s": {k: [] for k in RUNS}, "decode_s": {}}
    out["decode_s"] = {"numpy": [], "numpy, small pages": [], "torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, code in EXITS.items():
                out["exit_s"][name].append(round(_timed([sys.executable, "-c", code]), 3))
            for name, code in RUNS.items():
                folder = Path(tmp) / "run"
                cli = ["run", "configs/mnist_2nn_50.toml", "--no-plot", "--quiet", "--overwrite", "--out", str(folder)]
                wall = _timed([sys.executable, "-c", code, *cli])
                rounds = json.loads((folder / "summary.json").read_text())["wall_s"]
                out["outside_rounds_s"][name].append(round(wall - rounds, 3))
            for name in out["decode_s"]:
                proc = subprocess.run([sys.executable, "-c", DECODE, name], check=True, capture_output=True, text=True)
                out["decode_s"][name].append(round(float(proc.stdout.strip()), 4))
    for part, rows in out.items():
        print(part, {k: v for k, v in rows.items()})
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
