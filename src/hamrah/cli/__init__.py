"""The ``hamrah`` command: the only place that parses arguments and prints to the user.

Commands live in :mod:`hamrah.cli.experiments` (one machine), :mod:`hamrah.cli.system` (the real
server and devices) and :mod:`hamrah.cli.parties` (vertical FL's parties); each registers its own parsers.
"""

from __future__ import annotations

import argparse
import gc
import sys

from hamrah.cli import experiments, parties, system
from hamrah.core.errors import HamrahError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hamrah", description="Federated learning: simulate, sweep, reproduce.")
    sub = parser.add_subparsers(dest="command", required=True)
    experiments.add_commands(sub)
    parties.add_commands(sub)
    system.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except HamrahError as e:
        print(f"hamrah: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:  # not about a path the user gave: a bug, with its traceback
            raise
        print(f"hamrah: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hamrah: interrupted", file=sys.stderr)
        return 130
    return 0


def entry() -> None:
    """The console script (``hamrah``, ``python -m hamrah.cli``): run :func:`main` and exit with its code.

    Before the interpreter shuts down, every object is frozen out of the cyclic garbage collector: the
    collections run while modules are torn down would otherwise walk torch's hundreds of thousands of
    objects (``benchmarks/bench_startup_parts.py``). Finalization is otherwise unchanged: files close,
    logs flush and ``atexit`` hooks run as usual; only cycles still unreachable at exit go uncollected.
    """
    code = main()
    gc.freeze()
    sys.exit(code)
