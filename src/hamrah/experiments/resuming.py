"""``hamrah run --resume``: the checkpoint a run writes as it goes, and the state a resumed run starts from.

A resumed run goes on exactly as the uninterrupted run would, wherever the first was stopped (Ctrl-C,
SIGKILL, a crash): the checkpoint is one file renamed into place (:func:`~hamrah.experiments.export.write_checkpoint`),
the metric rows after its round are dropped and the kept ones rewritten whole, and a run killed after its
last checkpoint but before its final files gets them written without training again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hamrah.core.errors import ConfigError
from hamrah.core.files import write_atomic
from hamrah.experiments.config import ExperimentConfig
from hamrah.experiments.export import read_checkpoint, resume_digest, write_checkpoint
from hamrah.simulation import Simulator
from hamrah.simulation.resume import restore, resume_problem, snapshot

FINAL_FILES = ("summary.json", "model.safetensors", "manifest.json")  # written once the last round is run


class Checkpoints:
    """The after-round hook that writes a checkpoint every ``run.checkpoint_every`` rounds and after the
    last round; :meth:`finish` writes the round a run stopped at early (``stop_at_target``), so the
    last checkpoint always holds the final model and clients' state."""

    def __init__(self, sim: Simulator, out: Path, cfg: ExperimentConfig):
        self.sim, self.out = sim, out
        self.every, self.last, self.digest = cfg.run.checkpoint_every, cfg.run.rounds, resume_digest(cfg.to_dict())
        self.unsaved: int | None = None

    def __call__(self, r: int) -> None:
        self.unsaved = r
        if r % self.every == 0 or r == self.last or self.sim.loop.ended is not None:
            self.finish()

    def finish(self) -> None:
        if self.unsaved is not None:
            tensors, meta = snapshot(self.sim, self.unsaved)
            write_checkpoint(self.out, tensors, {**meta, "config_digest": self.digest})
            self.unsaved = None


@dataclass
class Resumed:
    """Where a resumed run starts: the next round, the metric rows it keeps, and whether it only has its
    final files to write (killed after its last checkpoint)."""

    first: int = 1
    rows: list[dict] = field(default_factory=list)
    done: bool = False


def resume_from(sim: Simulator, out: Path, cfg: ExperimentConfig) -> Resumed:
    """Load ``out``'s checkpoint into ``sim``; return where the run goes on.

    Raises:
        ConfigError: no checkpoint, another config, a run that cannot resume exactly, or nothing left to run.
    """
    problem = resume_problem(sim)
    if problem is not None:
        raise ConfigError(f"resume: this run cannot resume exactly: {problem}; expected to start it anew")
    tensors, meta = read_checkpoint(out, cfg.to_dict())
    first = restore(sim, tensors, meta)
    done = first > cfg.run.rounds or (meta.get("ended") == "target" and cfg.run.stop_at_target)
    if done and all((out / name).is_file() for name in FINAL_FILES):
        raise ConfigError(
            f"resume: {out} is complete ({first - 1} rounds); expected a larger run.rounds (--rounds) to go on"
        )
    return Resumed(first, [row for row in metric_rows(out) if row["round"] < first], done)


def metric_rows(out: Path) -> list[dict]:
    """Return the rows of ``out/metrics.jsonl`` (none when there is no such file).

    Raises:
        ConfigError: a line that is not a round's record.
    """
    rows: list[dict] = []
    if not (out / "metrics.jsonl").is_file():
        return rows
    for n, line in enumerate((out / "metrics.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("round"), int):
            raise ConfigError(
                f"{out}/metrics.jsonl line {n}: not a round's record; expected the lines hamrah run wrote "
                "(delete the line to go on)"
            )
        rows.append(row)
    return rows


def write_rows(path: Path, lines: list[str]) -> None:
    """Replace ``path`` with ``lines`` whole (a kill while they are written leaves the old file)."""
    write_atomic(path, "".join(line + "\n" for line in lines))
