"""Quality per compute: each system's validation NDCG@10 against the training wall time it took.

Why: a table of final figures hides cost. A system that needs 25x the time of another for the
same validation score is worse for a user with a fixed budget, and one still improving when its
budget ended may win with more. The curve of validation NDCG@10 after each epoch against the
time spent so far shows both, per corpus (issue 27).

The points come from the per-epoch histories the jobs keep (the training loop's record, also
in each run folder's `history.jsonl`): `epoch_s` is one epoch's training plus validation time
(`ttds.train.loop.fit`), `valid_NDCG@10` the figure that selects the model. Time starts at the
training loop; a TTDS-family system's tokenizer warm-up (`wall_parts_s.tokenizer`) is added
before its first epoch, since it is training compute the baselines do not need. Start-up and
test evaluation are left out: they do not depend on the budget. Only validation figures are
drawn: this chart is for comparing budgets, never for picking by test.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["METRIC", "compute_curve", "write_compute_chart"]

METRIC = "valid_NDCG@10"


def compute_curve(detail: dict, wall_s: float | None = None) -> list[tuple[float, float]]:
    """(seconds of training so far, validation NDCG@10) after each epoch of one run.

    `detail` is the system's details.json record (its "history" and, for TTDS, "wall_parts_s");
    a system without epochs (popularity) is one point at its wall time when it has a validation figure.
    """
    hist = [h for h in detail.get("history") or [] if h.get(METRIC) is not None and h.get("epoch_s") is not None]
    if not hist:
        v = detail.get(METRIC)
        return [(float(wall_s or 0.0), float(v))] if v is not None else []
    t = float((detail.get("wall_parts_s") or {}).get("tokenizer") or 0.0) if not detail.get("tokenizer_shared") else 0.0
    out = []
    for h in sorted(hist, key=lambda h: h.get("epoch", 0)):
        t += float(h["epoch_s"])
        out.append((t, float(h[METRIC])))
    return out


def write_compute_chart(curves: dict[str, list[list[tuple[float, float]]]], path: Path, title: str) -> Path:
    """One line per run (seed) of each system, one colour per system; popularity-like systems are points.

    `curves`: {system: [curve of run 1, curve of run 2, ...]} from `compute_curve`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, runs) in enumerate(curves.items()):
        c = colours[i % len(colours)]
        labelled = False
        for run in runs:
            if not run:
                continue
            xs, ys = [max(p[0], 0.1) for p in run], [p[1] for p in run]
            style = {"marker": "o", "markersize": 3} if len(run) > 1 else {"marker": "s", "markersize": 7, "linestyle": "none"}
            ax.plot(xs, ys, color=c, alpha=0.8, linewidth=1.2, label=None if labelled else f"{name} ({len(runs)} run{'s' if len(runs) != 1 else ''})", **style)
            labelled = True
    ax.set_xscale("log")
    ax.set_xlabel("training wall time so far, s (log; TTDS includes its tokenizer warm-up)")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
