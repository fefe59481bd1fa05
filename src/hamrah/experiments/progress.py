"""Live progress for long commands: rich progress bars (done, rate, time left) on a terminal, plain
lines otherwise: per evaluated round (``run``, ``sweep``), per cell (``lab``, ``reproduce``), per
committed round (``server``), per round the devices work on (``fleet``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from hamrah.simulation import RoundRecord

console = Console(highlight=False, soft_wrap=True)


class RateColumn(ProgressColumn):
    """Items per second (rich's estimate over the recent steps)."""

    def __init__(self, unit: str = "rounds"):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.speed
        if not speed:
            return Text("")
        return Text(f"{speed:.2f} {self.unit}/s" if speed >= 0.1 else f"{1 / speed:.0f} s/{self.unit.rstrip('s')}")


def _bar(middle: TextColumn, unit: str = "rounds", enabled: bool = True) -> Progress:
    """A transient bar: label, bar, done/total, ``middle``, rate, elapsed, time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        middle,
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )


def test_scores(rec: RoundRecord) -> dict[str, float]:
    """Return a round's test scores for its log line: accuracy and test loss where the task has them,
    then the task's own metrics (AUC, MSE, ...: the record's ``test_*`` extras)."""
    scores = {"accuracy": rec.test_accuracy, "test loss": rec.test_loss}
    extra = getattr(rec, "extra", {})
    scores.update({k[5:]: v for k, v in extra.items() if k.startswith("test_")})
    return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@contextmanager
def round_progress(total_rounds: int, label: str = "training", log_rounds: bool = True) -> Iterator:
    """Yield a callback ``on_round(record)`` that advances a progress bar and logs the round."""
    progress = _bar(TextColumn("{task.fields[stats]}"), enabled=console.is_terminal)
    task = progress.add_task(label, total=total_rounds, stats="")

    def on_round(rec: RoundRecord) -> None:
        scores = test_scores(rec)
        progress.update(task, completed=rec.round, stats=" ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        if log_rounds:
            line = f"round {rec.round:4d}: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items())
            line += f"  train loss {rec.train_loss:.4f}  clients {rec.clients}  {rec.elapsed_s:.1f} s"
            if getattr(rec, "epsilon", None) is not None:
                line += f"  epsilon {rec.epsilon:.3f}"
            if getattr(rec, "bytes_up", None) is not None:
                line += f"  up {rec.bytes_up / 2**20:.2f} MiB"
            extra = getattr(rec, "extra", {})
            if "personal_accuracy" in extra:  # each client on its own held-out examples: own model vs global
                line += f"  personal {extra['personal_accuracy']:.4f} (global {extra['local_accuracy']:.4f})"
            if console.is_terminal:
                progress.console.print(line, markup=False)
            else:  # plain text for logs and pipes (rich's renderer costs ~0.3 s a line there)
                print(line, flush=True)

    with progress:
        yield on_round


def _eta(done: int, total: int, elapsed: float) -> str:
    """Return "rate, time left" for ``done`` of ``total`` items in ``elapsed`` seconds."""
    if done <= 0 or elapsed <= 1e-9:  # nothing measurable yet (and no division by an underflowed zero)
        return "rate unknown yet"
    per = elapsed / done
    left = max(total - done, 0) * per
    rate = f"{per:.1f} s each" if per >= 1 else f"{1 / per:.1f}/s"
    return f"{rate}, about {left / 60:.1f} min left" if left >= 120 else f"{rate}, about {left:.0f} s left"


@contextmanager
def work_progress(total: int, label: str, unit: str = "items") -> Iterator:
    """Yield ``step(line="")``: call it once per finished item (a lab cell, a reproduction cell).

    On a terminal a progress bar shows items done, the rate and the time left, and ``line`` is printed
    above it; otherwise each step prints one plain line: ``line``, then ``label: done/total unit
    (rate, time left)``, so logs and pipes stay line-oriented.
    """
    progress = _bar(TextColumn(unit), unit, enabled=console.is_terminal)
    task = progress.add_task(label, total=total)
    start, done = time.perf_counter(), [0]

    def step(line: str = "") -> None:
        done[0] += 1
        progress.update(task, completed=done[0])
        if console.is_terminal:
            if line:
                progress.console.print(line, markup=False)
        else:
            if line:
                print(line, flush=True)
            print(
                f"{label}: {done[0]}/{total} {unit} ({_eta(done[0], total, time.perf_counter() - start)})", flush=True
            )

    with progress:
        yield step


@contextmanager
def follow_rounds(metrics: Path, total_rounds: int, label: str = "server") -> Iterator[None]:
    """Show a progress bar of committed rounds (rate, time left) while a server runs, on a terminal
    only: it follows the state folder's ``metrics.jsonl`` in a thread (the server logs a line per
    round anyway, which is what a pipe or a log file gets)."""
    if not console.is_terminal:
        yield
        return
    from hamrah.observe.tracking import RecordFeed

    progress = _bar(TextColumn("rounds"))
    task = progress.add_task(label, total=total_rounds)
    feed = RecordFeed(metrics, lambda rec: progress.update(task, completed=int(rec.get("round", 0))))
    progress.update(task, completed=max((r for r in feed.seen if isinstance(r, int)), default=0))
    with progress:
        feed.start()
        try:
            yield
        finally:
            feed.stop()


@contextmanager
def fleet_progress(label: str = "fleet") -> Iterator[Callable[[int, int | None], None]]:
    """Yield ``on_round(latest, total)`` for :func:`hamrah.device.fleet.run_fleet`: the latest round a
    device of the fleet got a task of, out of the run's rounds as the FL plan says (None: not said).

    On a terminal a bar shows rounds, rate and time left; otherwise one plain line per new round.
    """
    progress = _bar(TextColumn("rounds"), enabled=console.is_terminal)
    task: list[TaskID] = []
    start = time.perf_counter()

    def on_round(latest: int, total: int | None) -> None:
        if console.is_terminal:
            if not task:
                task.append(progress.add_task(label, total=total))
            progress.update(task[0], completed=latest - 1, total=total)  # the latest round is under way
            return
        of = f"/{total}" if total else ""
        eta = f" ({_eta(latest - 1, total, time.perf_counter() - start)})" if total and latest > 1 else ""
        print(f"{label}: round {latest}{of} under way{eta}", flush=True)

    with progress:
        yield on_round
