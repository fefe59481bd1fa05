"""Live progress for long runs: a rich progress bar plus one log line per evaluated round."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hamrah.simulation import RoundRecord

console = Console(highlight=False, soft_wrap=True)


@contextmanager
def round_progress(total_rounds: int, label: str = "training", log_rounds: bool = True) -> Iterator:
    """Yield a callback ``on_round(record)`` that advances a progress bar and logs the round."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )
    task = progress.add_task(label, total=total_rounds, stats="")

    def on_round(rec: RoundRecord) -> None:
        stats = f"acc {rec.test_accuracy:.4f} loss {rec.test_loss:.4f}"
        progress.update(task, completed=rec.round, stats=stats)
        if log_rounds:
            line = (f"round {rec.round:4d}: accuracy {rec.test_accuracy:.4f}  test loss {rec.test_loss:.4f}  "
                    f"train loss {rec.train_loss:.4f}  clients {rec.clients}  {rec.elapsed_s:.1f} s")
            if getattr(rec, "epsilon", None) is not None:
                line += f"  epsilon {rec.epsilon:.3f}"
            if getattr(rec, "bytes_up", None) is not None:
                line += f"  up {rec.bytes_up / 2**20:.2f} MiB"
            if console.is_terminal:
                progress.console.print(line, markup=False)
            else:  # plain text for logs and pipes (rich's renderer costs ~0.3 s a line there)
                print(line, flush=True)

    with progress:
        yield on_round
