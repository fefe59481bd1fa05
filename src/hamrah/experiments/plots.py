"""Learning-curve plots (matplotlib, no display needed).

matplotlib is imported when a plot is drawn, not when this module is imported: a run that writes no
plot never loads it (about 0.4 s of start-up, ``python -X importtime``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _pyplot():
    """Return ``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    curves: dict[str, tuple[Sequence[int], Sequence[float]]],
    path: Path,
    *,
    title: str = "",
    target: float | None = None,
    ylabel: str = "test accuracy",
) -> None:
    """Write a PNG with one accuracy-per-round line per entry of ``curves``.

    Args:
        curves: label -> (rounds, accuracies), one line each.
        path: the PNG to write.
        title, ylabel: the axes' labels; target: a dashed horizontal line, or None.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (rounds, acc) in curves.items():
        ax.plot(rounds, acc, label=label, linewidth=1.5)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("communication round")
    ax.set_ylabel(ylabel)
    lows = [min(a) for _, a in curves.values() if len(a)]
    if lows and target is not None:
        ax.set_ylim(max(0.0, min(min(lows), target - 0.1)), 1.0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_series(
    series: dict[str, tuple[Sequence, Sequence[float], str]],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    log_y: bool = False,
) -> None:
    """Write a PNG with one line per entry of ``series``: label -> (xs, ys, matplotlib format such as
    ``"o-C0"``). String xs are categories, placed in the order they first appear."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (xs, ys, fmt) in series.items():
        ax.plot(list(xs), list(ys), fmt, label=label, linewidth=1.5, markersize=5)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
