"""The security lab's report: per-seed rows summarised as mean and spread, two Markdown tables, a heatmap,
and the results block of a Markdown file."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

BEGIN, END = "<!-- lab:begin -->", "<!-- lab:end -->"
_KEYS = ("main_accuracy", "attack_success", "clean_success")


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarize(rows: list[dict]) -> list[dict]:
    """Return one row per (attack, defence): each metric's mean and its sample standard deviation over
    the seeds (``<key>`` and ``<key>_sd``; None where the metric does not apply), and the seed count."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["attack"], r["defence"]), []).append(r)
    out = []
    for (attack, defence), rs in groups.items():
        row = {"attack": attack, "defence": defence, "seeds": len(rs)}
        for key in _KEYS:
            row[key], row[f"{key}_sd"] = _stats([r.get(key) for r in rs])
        out.append(row)
    return out


def _pct(v: float | None, sd: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}" if sd is None else f"{100 * v:.1f} ± {100 * sd:.1f}"


def markdown_tables(rows: list[dict]) -> str:
    """Render summarised rows (:func:`summarize`) as attack x defence tables in %: main accuracy, and
    attack success with the clean model's rate for the same inputs in brackets."""
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    defences = list(dict.fromkeys(r["defence"] for r in rows))
    cell = {(r["attack"], r["defence"]): r for r in rows}
    spread = any(r.get("seeds", 1) > 1 for r in rows)
    most = max((r.get("seeds", 1) for r in rows), default=1)

    def text(r: dict, key: str) -> str:
        out = _pct(r[key], r.get(f"{key}_sd") if spread else None)
        if r.get("seeds", 1) < most and out != "-":
            out += f" [{r['seeds']} of {most} seeds]"
        if key == "attack_success" and r.get("clean_success") is not None:
            out += f" ({_pct(r['clean_success'])})"
        return out

    suffix = "; mean ± standard deviation over seeds" if spread else ""
    out = []
    for key, title in (
        ("main_accuracy", f"Main-task test accuracy (%{suffix})"),
        (
            "attack_success",
            f"Attack success rate (%{suffix}; targeted attacks only; in brackets: "
            "the same inputs on the model trained without attack, same defence)",
        ),
    ):
        out += [f"**{title}**", "", "| attack | " + " | ".join(defences) + " |", "|---|" + "---|" * len(defences)]
        for a in attacks:
            out.append(
                f"| {a} | " + " | ".join(text(cell[(a, d)], key) if (a, d) in cell else "" for d in defences) + " |"
            )
        out.append("")
    return "\n".join(out)


def plot_heatmap(rows: list[dict], path: Path, title: str = "") -> None:
    """Write a PNG with two heatmaps (main accuracy, attack success), one cell per pair, values printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    defences = list(dict.fromkeys(r["defence"] for r in rows))
    cell = {(r["attack"], r["defence"]): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(2.6 + 1.5 * len(defences), 1.2 + 0.45 * len(attacks)), squeeze=False)
    for ax, key, label, cmap in (
        (axes[0, 0], "main_accuracy", "main accuracy (%)", "RdYlGn"),
        (axes[0, 1], "attack_success", "attack success (%)", "RdYlGn_r"),
    ):
        grid = np.full((len(attacks), len(defences)), np.nan)
        for i, a in enumerate(attacks):
            for j, d in enumerate(defences):
                v = cell.get((a, d), {}).get(key)
                grid[i, j] = np.nan if v is None else 100 * v
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for i in range(len(attacks)):
            for j in range(len(defences)):
                ax.text(
                    j, i, "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=8
                )
        ax.set_xticks(range(len(defences)), defences, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_doc(doc: Path, block: str) -> None:
    """Replace the text between the lab markers of ``doc`` with ``block`` (append the markers if absent)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Security lab\n"
    wrapped = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + wrapped + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + wrapped + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """``python -m hamrah.experiments.lab_report ROWS.jsonl [ROWS.jsonl ...]``: print the summary tables of
    the rows that one or more lab runs saved (``rows.jsonl`` in each ``--out``), e.g. of a run stopped
    early or split over several processes by ``--defences``. A cell (attack, defence, seed) found in
    more than one file keeps its first row."""
    import json
    import sys

    paths = sys.argv[1:] if argv is None else argv
    rows, seen = [], set()
    for p in paths:
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line else None
            if row is not None and (row["attack"], row["defence"], row["seed"]) not in seen:
                seen.add((row["attack"], row["defence"], row["seed"]))
                rows.append(row)
    seeds = sorted({r["seed"] for r in rows})
    print(f"{len(rows)} runs from {', '.join(paths)}; seeds {', '.join(map(str, seeds))}\n")
    print(markdown_tables(summarize(rows)))


if __name__ == "__main__":
    main()
