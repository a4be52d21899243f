"""Write the benchmark's results: results.json, results.md (table, paper reference, perf) and a PNG chart.

results.json has exactly the issue's shape:
  {"dataset": ..., "systems": {name: {"HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "wall_s",
   "peak_rss_mb", "config"}}, "perf": {...}, "run": {...}}
where "run" (`provenance`) says which commit, machine and command produced the figures and
under which protocol, so a document rendered from results.json alone (`write_document` below,
jobs/report.py) can cite them. Everything else (validation figures, epochs, memory per process,
histories) goes to details.json, so the table can say how each figure was obtained without
changing that shape.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ttds.bench.compute import compute_curve, write_compute_chart
from ttds.bench.paired import paired_sentence, recipe_comparison, recipe_interval, recipe_sentence
from ttds.eval.per_user import read_per_user

__all__ = ["COMPUTE_CHART", "METRICS", "PAPER_INSTRUMENTS", "README_BEGIN", "README_END", "BenchRun", "combine_runs", "confirm_statement",
           "git_commit", "group_charts", "group_summary", "load_run", "load_runs",
           "provenance", "readme_table", "results_document", "results_markdown", "system_table", "update_readme",
           "write_chart", "write_document", "write_results"]

METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10")
COMPUTE_CHART = "quality_per_compute.png"  # validation NDCG@10 against training time (ttds.bench.compute)
SYSTEM_KEYS = (*METRICS, "wall_s", "peak_rss_mb", "config")
CLAIM_SEEDS = 3  # training seeds per side before a comparison supports a claim (DESIGN.md, "Results discipline")

# TTDS paper (arXiv 2409.09253), Instruments test rows. Reference only: never measured here.
PAPER_INSTRUMENTS: dict[str, dict[str, float]] = {
    "SASRec": {"HR@10": 0.0947, "NDCG@10": 0.0690},
    "TIGER": {"HR@10": 0.1064, "NDCG@10": 0.0803},
    "TTDS": {"HR@1": 0.0714, "HR@5": 0.1028, "HR@10": 0.1281, "NDCG@5": 0.0872, "NDCG@10": 0.0947},
}


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def best_per_column(systems: dict[str, dict]) -> dict[str, float]:
    return {k: max(s[k] for s in systems.values()) for k in METRICS if systems}


def results_markdown(results: dict, details: dict, meta: dict) -> str:
    systems = results["systems"]
    lines = [
        f"# Benchmark on {results['dataset']}: full-ranking leave-one-out test split",
        "",
        protocol_sentence(meta),
        "",
        *system_table(systems, details),
    ]
    lines += ["", "Best test figure per metric column in **bold** (ties: all bold). Validation figures are for model",
              "selection only; compare only the test columns with published test rows.", ""]
    lines += _verdict(systems, details, results.get("paired"))
    lines += diagnostics_markdown(results.get("diagnostics") or {})
    failures = meta.get("failures") or {}
    if failures:
        lines += ["", "**Failed systems (no row above):**"] + [f"- `{n}`: {why}" for n, why in failures.items()]
    lines += index_markdown(details)
    notes = [f"`{name}`: {d['note']}" for name, d in details.items() if d.get("note")]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    lines += [
        "",
        f"Memory: {meta.get('rss_method', '')}. `peak_rss_mb` is the largest single process; details.json has the",
        "tree total and the top processes per system. wall s = the whole system run (tokenizer warm-up, training,",
        "validation, test evaluation).",
        "",
        *paper_reference_markdown(),
    ]
    if results.get("perf"):
        lines += ["", "## Speed and memory (`--perf`)", ""] + perf_markdown(results["perf"])
    lines += ["", f"Chart: `{meta.get('chart', 'results.png')}`; validation NDCG@10 against training time: `{COMPUTE_CHART}`. "
              "Exact configs: results.json (`config` per system).", ""]
    return "\n".join(lines)


def protocol_sentence(meta: dict) -> str:
    """How a run's figures were obtained: selection on validation, one test read, the ranking protocol, the budget."""
    return ("Every system is trained on the train split, selected on the validation split (early stopping on "
            "validation NDCG@10, best epoch kept) and scored ONCE on the test split by the same full-ranking code "
            f"(`ttds.eval.metrics`): each user's held-out item ranked against all {meta.get('items', '?')} items, "
            + ("each user's history items EXCLUDED from its ranking (--exclude-seen, RecBole's full-sort protocol)"
               if meta.get("exclude_seen") else "history items not excluded (the paper's protocol; --exclude-seen removes them)")
            + f", {meta.get('test_users', '?')} test users. TTDS-family rows average the next-item templates, as the paper. "
            f"Budget per system: {meta.get('budget', '?')}.")


def paper_reference_markdown() -> list[str]:
    """The paper's Instruments rows, labelled as a reference that this platform did not measure."""
    return ["## Reference: the paper's reported Instruments test figures (NOT measured here)", "",
            "From the TTDS paper (arXiv 2409.09253), Instruments. Listed for comparison only; they were not produced",
            "by this platform, and only the measured tables are results.", "",
            "| system (paper's figures) | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|",
            *(f"| {name} (paper) | " + " | ".join(_fmt(row.get(k)) for k in METRICS) + " |" for name, row in PAPER_INSTRUMENTS.items())]


def system_table(systems: dict, details: dict) -> list[str]:
    """One run's table: test metrics (best per column in bold), validation NDCG@10, epochs, wall time, memory."""
    best = best_per_column(systems)
    lines = ["| system | " + " | ".join(METRICS) + " | valid NDCG@10 | best/run epochs | wall s | peak RSS MB (largest process) |",
             "|---" * (len(METRICS) + 5) + "|"]
    for name, s in systems.items():
        d = details.get(name, {})
        cells = [f"**{_fmt(s[k])}**" if s[k] == best[k] else _fmt(s[k]) for k in METRICS]
        epochs = f"{d['best_epoch'] + 1}/{d['epochs_run']}" if d.get("best_epoch") is not None and d.get("epochs_run") else "–"
        label = d.get("label", name) + (f" (`{name}`)" if d.get("label", name) != name else "")
        lines.append(
            f"| {label} | " + " | ".join(cells)
            + f" | {_fmt(d.get('valid_NDCG@10'))} | {epochs} | {s['wall_s']:.0f} | {s['peak_rss_mb']:.0f} |"
        )
    return lines


def diagnostics_markdown(diag: dict) -> list[str]:
    """What each system recommends (`ttds.bench.diagnostics`), one row per system with a ranked list on file."""
    rows = {n: d for n, d in diag.items() if "error" not in d}
    if not rows:
        return []
    out = ["", "What each system recommends (test top 10; `ttds.bench.diagnostics`): share of slots holding an item the user "
           "already has, share of users whose held-out item is a seen one, mean log(1 + training count) of recommended vs "
           "held-out items (popularity bias), catalogue coverage:", "",
           "| system | seen items in top 10 | held-out item seen | log pop recommended | log pop held-out | coverage |",
           "|---|---|---|---|---|---|"]
    for n, d in rows.items():
        out.append(f"| `{n}` | {100 * d['seen_share']:.1f}% | {100 * d['target_seen_share']:.1f}% | {_fmt(d['log_pop_recommended'], 2)} "
                   f"| {d['log_pop_target']:.2f} | {100 * d['coverage']:.1f}% |")
    return (out + _by_popularity_markdown({n: d["by_popularity"] for n, d in rows.items() if "by_popularity" in d})
            + _by_history_markdown({n: d["by_history"] for n, d in rows.items() if "by_history" in d}))


def _by_popularity_markdown(rows: dict) -> list[str]:
    """NDCG@10 per bucket of held-out item popularity, with the share of slots each system spends there."""
    if not rows:
        return []
    users = next(iter(rows.values()))  # the users' split over buckets is the same for every system
    buckets = list(users)
    out = ["", "Where the hits come from: test NDCG@10 of the users whose held-out item falls in each popularity bucket "
           "(items ranked by training count), and in brackets the share of the system's top-10 slots spent on that bucket's items:", "",
           "| system | " + " | ".join(f"{b} of items ({100 * users[b]['users']:.0f}% of users)" for b in buckets) + " |",
           "|---|" + "---|" * len(buckets)]
    for n, d in rows.items():
        out.append(f"| `{n}` | " + " | ".join(f"{_fmt(d[b]['NDCG@10'])} ({_pct(d[b]['slots'])})" for b in buckets) + " |")
    return out


def _by_history_markdown(rows: dict) -> list[str]:
    """NDCG@10 per bucket of history length (users with little context vs long sequences)."""
    if not rows:
        return []
    users = next(iter(rows.values()))
    buckets = list(users)
    out = ["", "By history length: test NDCG@10 of the users with that many items before the held-out one:", "",
           "| system | " + " | ".join(f"{b} items ({100 * users[b]['users']:.0f}% of users)" for b in buckets) + " |",
           "|---|" + "---|" * len(buckets)]
    for n, d in rows.items():
        out.append(f"| `{n}` | " + " | ".join(f"{d[b]['NDCG@10']:.4f}" for b in buckets) + " |")
    return out


def index_summary(tokenizer_dir: str | Path) -> dict | None:
    """The ID scheme of one TTDS-family system, from its tokenizer's metrics.json: kind, X source,
    collisions (before suffix tokens, and with plain nearest codes), mean codebook perplexity,
    the item code spectrum's effective rank and the NMI of codes with item categories."""
    path = Path(tokenizer_dir) / "metrics.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    items, diag = m.get("items", {}), m.get("diagnostics", {})
    usage = items.get("codebook_usage") or []
    nmi = (diag.get("item_category_nmi") or {})
    return {
        "kind": m.get("kind"), "source": m.get("source"), "levels": items.get("levels"), "codebook_size": items.get("codebook_size"),
        "collision_rate": items.get("collision_rate_before_suffix"), "collision_rate_nearest": items.get("collision_rate_nearest_code"),
        "perplexity": sum(u["perplexity"] for u in usage) / len(usage) if usage else None,
        "effective_rank": (diag.get("item_spectrum") or {}).get("effective_rank"),
        "nmi_first_level": nmi.get("first_level"), "nmi_full_code": nmi.get("full_code"),
    }


def index_markdown(details: dict) -> list[str]:
    """A table of the TTDS-family systems' ID schemes (none when fewer than two differ in kind)."""
    rows = {n: index_summary(d["tokenizer_dir"]) for n, d in details.items() if d.get("kind") == "ttds" and d.get("tokenizer_dir")}
    rows = {n: r for n, r in rows.items() if r is not None}
    if len({r["kind"] for r in rows.values()}) < 2:
        return []
    pct = lambda v: "–" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    num = lambda v, d=1: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    out = ["", "ID schemes (`index.kind`) of the TTDS-family rows, from each tokenizer's metrics.json (items):", "",
           "| system | index.kind | X source | M x N | collisions before suffix | nearest-code collisions | mean perplexity per level "
           "| code spectrum effective rank | NMI with categories (level 1 / full code) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for n, r in rows.items():
        nmi = "–" if r["nmi_first_level"] is None else f"{r['nmi_first_level']:.3f} / {r['nmi_full_code']:.3f}"
        out.append(f"| `{n}` | {r['kind']} | {r['source']} | {r['levels']} x {r['codebook_size']} | {pct(r['collision_rate'])} "
                   f"| {pct(r['collision_rate_nearest'])} | {num(r['perplexity'])} | {num(r['effective_rank'])} | {nmi} |")
    return out


def is_baseline(name: str, detail: dict) -> bool:
    """The issue's baselines: popularity, SASRec, GRU4Rec and the TIGER-style static-ID recommender."""
    return detail.get("kind") in ("popularity", "seq") or name == "tiger"


def _verdict(systems: dict, details: dict, paired: dict | None = None) -> list[str]:
    baselines = {n: s for n, s in systems.items() if is_baseline(n, details.get(n, {}))}
    ttds = systems.get("ttds")
    if not baselines or ttds is None:
        return []
    strongest = max(baselines, key=lambda n: baselines[n]["NDCG@10"])
    b, t = baselines[strongest]["NDCG@10"], ttds["NDCG@10"]
    word = "beats" if t > b else "does NOT beat"
    lines = [f"**TTDS {word} the strongest baseline on test NDCG@10**: {t:.4f} vs {strongest} {b:.4f} ({(t - b) / max(b, 1e-12) * 100:+.1f}%)."]
    return lines + paired_markdown(paired)


def paired_markdown(paired: dict | None) -> list[str]:
    """One sentence per system of a run's paired test against its strongest baseline (`ttds.bench.paired`)."""
    rows = (paired or {}).get("systems", {})
    if not rows:
        return []
    return (["", f"Paired test against `{paired['baseline']}` (per-user {paired['metric']} differences on the same test users):", ""]
            + [f"- `{n}`: " + (f"not available ({c['error']})" if "error" in c else paired_sentence(n, paired["baseline"], c))
               for n, c in rows.items()])


def perf_markdown(perf: dict) -> list[str]:
    out: list[str] = []
    for key in ("decode_reference", "decode_trained"):
        if isinstance(perf.get(key), dict) and "error" in perf[key]:
            out += [f"`{key}`: not measured ({perf[key]['error']}).", ""]
    ref = perf.get("decode_reference")
    if ref and "error" not in ref:
        out += [
            f"Decoding, reference setting (random tiny Llama, {ref.get('items', 10000)} random 4-token IDs, batch 64, beam 20, 1 thread):",
            f"constrained {ref['constrained_users_per_s']:.1f} users/s vs unconstrained {ref['unconstrained_users_per_s']:.1f} users/s; "
            f"time ratio constrained/unconstrained **{ref['constrained_over_unconstrained_time']:.3f}** (target <= 1.20).",
            "",
        ]
    tr = perf.get("decode_trained")
    if tr and "error" not in tr:
        out += [
            f"Decoding, trained `{tr.get('system', 'ttds')}` model ({tr['users']} test users, batch {tr['batch']}, beam {tr['beam_width']}, "
            f"top {tr['top_k']}, {tr['threads']} thread(s), {tr['items']} items):",
            "",
            "| mode | users/s |",
            "|---|---|",
            f"| unconstrained beam | {tr['unconstrained_users_per_s']:.1f} |",
            f"| trie-constrained beam | {tr['constrained_users_per_s']:.1f} |",
            f"| retrieval fast path (id_head + faiss) | {tr['retrieval_users_per_s']:.1f} |",
            *([f"| prompt forward alone (the floor of any one-pass path) | {tr['prompt_forward_users_per_s']:.1f} |"] if "prompt_forward_users_per_s" in tr else []),
            "",
            f"Constrained/unconstrained time ratio **{tr['constrained_over_unconstrained_time']:.3f}** (target <= 1.20); "
            f"retrieval speed-up over constrained beam **{tr['retrieval_speedup_over_beam']:.1f}x** (target >= 10x)"
            + (f"; constrained beam / prompt forward {tr['beam_over_prompt_forward']:.1f}x, the most any one-forward path can gain here." if "beam_over_prompt_forward" in tr else "."),
            "",
        ]
    for name, sc in (perf.get("train_throughput") or {}).items():
        if "error" in sc:
            out += [f"Training throughput `{name}`: not measured ({sc['error']}).", ""]
            continue
        two = (f"2 workers {sc['2_workers']['examples_per_s']:.1f} examples/s; ratio 2/1 **{sc['ratio_2_over_1']:.2f}**" if "2_workers" in sc
               else "2 workers not measured")
        out += [
            f"Training throughput `{name}` (short run, Ray Train): 1 worker {sc['1_worker']['examples_per_s']:.1f} examples/s, {two}"
            + (f" ({sc['note']})" if sc.get("note") else "") + ".",
            "",
        ]
    for key, ev in (perf.get("test_eval") or {}).items():
        rss = ev.get("peak_rss_mb_per_worker") or {}
        rss_txt = ", ".join(f"{k}: {v:.0f} MB" for k, v in rss.items()) or "–"
        out += [
            f"Full test-set evaluation `{key}`: {ev['users']} users x {ev['templates']} template(s) in {ev['wall_s']:.1f} s "
            f"({ev['users_per_s']:.1f} user-templates/s, {ev.get('workers', 1)} worker(s)); peak RSS per worker: {rss_txt}.",
            "",
        ]
    if perf.get("machine"):
        out.append(f"Machine: {perf['machine']}.")
    return out


def write_chart(results: dict, path: Path, spread: dict[str, dict[str, tuple[float, float]]] | None = None,
                title: str | None = None) -> Path:
    """Grouped bars: one group per metric, one bar per system; `spread` ({system: {metric: (low, high)}},
    e.g. the lowest and highest run of several seeds) draws a range on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = results["systems"]
    names = list(systems)
    x = np.arange(len(METRICS))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(METRICS) + 0.5 * len(names)), 4.5))
    for i, name in enumerate(names):
        vals = np.array([systems[name][k] for k in METRICS])
        err = None
        if spread and name in spread:
            lo_hi = np.array([spread[name][k] for k in METRICS]).T
            err = np.abs(lo_hi - vals)
        ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name, yerr=err, capsize=2)
    ax.set_xticks(x, METRICS)
    ax.set_ylabel("test metric (full ranking)")
    ax.set_title(title or f"{results['dataset']}: test split, best-validation models", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def git_commit(repo: Path | None = None) -> dict:
    """{"commit", "dirty"} of the checkout holding the ttds package. A copy without .git (a `ray job submit
    --working-dir` upload) records $TTDS_COMMIT when set, else None ("not recorded" in the documents)."""
    repo = repo or Path(__file__).resolve().parents[3]

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": os.environ.get("TTDS_COMMIT") or None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def provenance(meta: dict) -> dict:
    """What produced a results.json: commit, machine, command, time, and the protocol behind its figures."""
    return {
        **git_commit(),
        "machine": meta.get("machine"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "written_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{k: meta.get(k) for k in ("exclude_seen", "items", "test_users", "budget", "train_seed")},
    }


def write_results(out: Path, results: dict, details: dict, meta: dict) -> dict[str, Path]:
    """results.json (with its `provenance` under "run"), details.json, results.png, results.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "run": provenance(meta)}
    for name, s in results["systems"].items():
        missing = [k for k in SYSTEM_KEYS if k not in s]
        if missing or set(s) != set(SYSTEM_KEYS):
            raise ValueError(f"system {name}: results.json keys must be exactly {SYSTEM_KEYS}, missing {missing}")
    paths = {"json": out / "results.json", "details": out / "details.json", "chart": out / "results.png", "md": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=2, default=float))
    paths["details"].write_text(json.dumps(details, indent=2, default=float))
    if results["systems"]:
        write_chart(results, paths["chart"])
        curves = {n: [compute_curve(details.get(n, {}), s["wall_s"])] for n, s in results["systems"].items()}
        if any(c for runs in curves.values() for c in runs):
            paths["compute_chart"] = write_compute_chart(curves, out / COMPUTE_CHART, f"{results['dataset']}: quality per compute (validation)")
    paths["md"].write_text(results_markdown(results, details, {**meta, "chart": paths["chart"].name}))
    return paths


# ----------------------------------------------------------------------------- docs/results.md over several runs
# Why here: the document over several benchmark folders is built from the same tables as each run's own
# results.md (system_table, paired_markdown, diagnostics_markdown, write_chart), so there is one renderer.

README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"
_COMBINED = ("NDCG@10", "HR@10", "HR@1", "NDCG@5", "HR@5")


@dataclass(frozen=True)
class BenchRun:
    """One benchmark folder (jobs/benchmark.py --out): its results.json, details.json and provenance."""

    folder: Path
    label: str  # the folder as the user named it
    results: dict
    details: dict
    run: dict  # results.json's "run" (`provenance`), or what an older folder's run.json holds
    confirm: dict = field(default_factory=dict)  # a seed of a confirmatory run: its parent's plan and tuning (ttds.bench.confirm)

    @property
    def dataset(self) -> str:
        return self.results["dataset"]

    def per_user_dir(self, system: str) -> Path:
        """Where the system's per-user figures are: inside this folder first (it may have moved), else where it ran."""
        here = self.folder / "systems" / system
        return here if here.is_dir() else Path(self.details.get(system, {}).get("out_dir", here))


def load_run(folder: str | Path) -> BenchRun:
    """Read one benchmark folder; a folder without results.json, or a results.json of another shape, is a clear error."""
    folder = Path(folder)
    path = folder / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no results.json here (give jobs/benchmark.py --out folders)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from e
    missing = [k for k in ("dataset", "systems") if k not in results]
    if missing:
        raise ValueError(f"{path}: not a benchmark results.json (no {', '.join(missing)})")
    for name, sys_ in results["systems"].items():
        absent = [k for k in METRICS if k not in sys_]
        if absent:
            raise ValueError(f"{path}: system {name} has no {', '.join(absent)}")
    details_path = folder / "details.json"
    details = json.loads(details_path.read_text()) if details_path.is_file() else {}
    run = results.get("run") or _older_provenance(folder)
    return BenchRun(folder=folder, label=str(folder), results=results, details=details, run=run)


def load_runs(folder: str | Path) -> list[BenchRun]:
    """The runs of one folder: itself, or, for a confirmatory folder (jobs/benchmark.py --seeds), each
    finished seed's run carrying the parent's plan and tuning."""
    folder = Path(folder)
    path = folder / "results.json"
    top = json.loads(path.read_text()) if path.is_file() else {}
    if "confirm" not in top:
        return [load_run(folder)]
    confirm = {k: v for k, v in top["confirm"].items() if k in ("plan", "tuning", "folder")}
    confirm["folder"] = str(folder)
    runs = []
    for name in top["confirm"].get("seed_dirs", []):
        if (folder / name / "results.json").is_file():
            r = load_run(folder / name)
            runs.append(BenchRun(r.folder, r.label, r.results, r.details, r.run, confirm))
    if not runs:
        raise ValueError(f"{folder}: a confirmatory folder with no finished seed yet")
    return runs


def _older_provenance(folder: Path) -> dict:
    """A folder written before results.json carried "run": its run.json has the machine and the protocol, not the commit."""
    path = folder / "run.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    cfg = old.get("config", {})
    return {"commit": None, "dirty": None, "machine": old.get("machine"), "command": None, "written_utc": None,
            "exclude_seen": cfg.get("exclude_seen"), "train_seed": cfg.get("train_seed")}


# the two ranking protocols a benchmark runs under (--exclude-seen or not): label, file-name part
_PROTOCOLS = {True: ("seen items excluded", "exclude-seen"), False: ("every item ranked (the paper's protocol)", "all-items")}


def _cold_fraction(run: BenchRun) -> float:
    """--cold-items of the run (0: none): its main rows are then over the warm items only, another protocol."""
    return float((run.results.get("cold_items") or {}).get("fraction") or 0.0)


def _protocol(run: BenchRun) -> str:
    cold = _cold_fraction(run)
    return _PROTOCOLS[bool(run.run.get("exclude_seen"))][0] + (f", {cold:.0%} of the items cold (held out of training)" if cold else "")


def combine_runs(runs: list[BenchRun]) -> list[dict]:
    """Group runs by (dataset, protocol); per system: how many runs (seeds), the mean, SD and range of
    each test metric over them, the 95% interval of test NDCG@10 over runs and users
    (`recipe_interval`), the mean validation NDCG@10, and each other system paired with the strongest
    baseline, chosen on VALIDATION, over all runs and users (`recipe_comparison`); see `group_summary`."""
    groups: dict[tuple[str, bool, float], list[BenchRun]] = {}
    for r in runs:
        groups.setdefault((r.dataset, bool(r.run.get("exclude_seen")), _cold_fraction(r)), []).append(r)
    out = []
    # per dataset: the main protocol (seen items excluded) first, every item ranked next, cold-item runs last
    for (dataset, exclude_seen, cold), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2] > 0, not kv[0][1])):
        protocol, protocol_slug = _protocol(rs[0]), _PROTOCOLS[exclude_seen][1] + (f"-cold{round(100 * cold)}" if cold else "")
        entries: dict[str, list[tuple[BenchRun, dict]]] = {}
        for r in rs:
            for name, figures in r.results["systems"].items():
                entries.setdefault(name, []).append((r, figures))
        systems = {}
        for name, got in entries.items():
            vals = {k: [float(f[k]) for _, f in got] for k in METRICS}
            valid = [r.details.get(name, {}).get("valid_NDCG@10") for r, _ in got]
            valid = [float(v) for v in valid if v is not None]
            systems[name] = {
                "runs": len(got), "mean": {k: statistics.fmean(v) for k, v in vals.items()},
                "sd": {k: statistics.stdev(v) if len(v) > 1 else None for k, v in vals.items()},
                "range": {k: (min(v), max(v)) for k, v in vals.items()},
                "valid_NDCG@10": statistics.fmean(valid) if valid else None,
                "valid_sd": statistics.stdev(valid) if len(valid) > 1 else None,
                "baseline": is_baseline(name, got[0][0].details.get(name, {})),
                "seeds": [r.run.get("train_seed") for r, _ in got],
                "wall_s": statistics.fmean(float(f.get("wall_s", 0.0)) for _, f in got),
                "test_reads": [_test_reads(r, name) for r, _ in got],
                "interval": _interval(name, [r for r, _ in got]),
            }
        out.append({"dataset": dataset, "protocol": protocol, "slug": f"{_slug(dataset)}-{protocol_slug}", "runs": rs, "systems": systems,
                    "paired": _paired_over_runs(rs, systems), "confirm": next((r.confirm for r in rs if r.confirm), {})})
    return out


def _interval(name: str, runs: list[BenchRun]) -> dict:
    try:
        return recipe_interval([read_per_user(r.per_user_dir(name)) for r in runs])
    except (FileNotFoundError, ValueError) as e:
        return {"error": str(e)[:300]}


def _test_reads(run: BenchRun, name: str) -> int | None:
    """How many times the run scored `name` on test (its test_reads.jsonl; None for a run from before it was kept)."""
    path = run.folder / "test_reads.jsonl"
    if not path.is_file():
        return None
    return sum(json.loads(ln).get("system") == name for ln in path.read_text().splitlines() if ln.strip())


def _paired_over_runs(runs: list[BenchRun], systems: dict) -> dict:
    """Every other system against the strongest baseline, over every run that scored both, from the
    per-user files; {} without a baseline. Both sides of the headline are chosen on VALIDATION
    (mean validation NDCG@10 over runs), never on test: the strongest baseline, and the best
    TTDS-family system (`best_ttds`, None when no TTDS-family system ran)."""
    on_valid = lambda names: max(names, key=lambda n: systems[n]["valid_NDCG@10"]) if names else None  # noqa: E731
    baselines = [n for n, s in systems.items() if s["baseline"] and s["valid_NDCG@10"] is not None]
    if not baselines:
        return {}
    strongest = on_valid(baselines)
    out: dict = {"baseline": strongest, "chosen_on": "validation NDCG@10 (mean over runs)",
                 "best_ttds": on_valid([n for n, s in systems.items() if not s["baseline"] and s["valid_NDCG@10"] is not None]),
                 "systems": {}}
    b = [read_per_user_or_none(r, strongest) for r in runs if strongest in r.results["systems"]]
    for name in systems:
        if name == strongest:
            continue
        try:
            a = [read_per_user(r.per_user_dir(name)) for r in runs if name in r.results["systems"]]
            if any(x is None for x in b):
                raise FileNotFoundError(f"{strongest}: a run has no per-user file")
            out["systems"][name] = recipe_comparison(a, b)
        except (FileNotFoundError, ValueError) as e:
            out["systems"][name] = {"error": str(e)[:300]}
    return out


def read_per_user_or_none(run: BenchRun, name: str):
    try:
        return read_per_user(run.per_user_dir(name))
    except (FileNotFoundError, ValueError):
        return None


def confirm_statement(group: dict) -> str:
    """The statement a group's figures support: the best TTDS recipe against the strongest baseline
    (both chosen on validation), beyond noise or not, and what is missing for a confirmatory claim."""
    paired, systems = group["paired"], group["systems"]
    if not paired:
        return "No baseline with a validation figure in these runs: no comparison can be stated."
    base, best = paired["baseline"], paired.get("best_ttds")
    if best is None:
        text = (f"No TTDS-family system has finished seeds in these runs, so the headline comparison (the best TTDS recipe against "
                f"the strongest baseline, both chosen on validation) is NOT measured yet. The strongest baseline on validation is "
                f"`{base}` (validation NDCG@10 {_fmt(systems[base]['valid_NDCG@10'])}).")
        others = {n: c for n, c in paired["systems"].items() if "error" not in c}
        if others:
            text += " Against it: " + "; ".join(f"`{n}` {_beyond(c, n, base)}" for n, c in others.items()) + "."
        return text
    c = paired["systems"].get(best, {})
    if "error" in c:
        return f"The best TTDS recipe on validation, `{best}`, could not be paired with `{base}`: {c['error']}."
    text = (f"The best TTDS recipe on validation, `{best}`, against the strongest baseline on validation, `{base}`: test NDCG@10 "
            f"{c['a']:.4f} vs {c['b']:.4f}, difference {c['diff']:+.4f}, 95% over seeds and users [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]: "
            f"{_beyond(c, best, base)}.")
    runs = _headline_runs(group)
    if runs < CLAIM_SEEDS:
        text += f" Only {runs} seed(s) on a side: the protocol asks for at least {CLAIM_SEEDS} before a claim."
    return text


def _headline_runs(g: dict) -> int | None:
    """Seeds on the smaller side of group `g`'s headline comparison (best TTDS vs strongest baseline); None without one."""
    paired = g.get("paired") or {}
    best, base = paired.get("best_ttds"), paired.get("baseline")
    return min(g["systems"][best]["runs"], g["systems"][base]["runs"]) if best and base else None


def _beyond(c: dict, a: str, b: str) -> str:
    lo, hi = c["ci95"]
    if lo > 0:
        return f"ahead beyond noise ({c['diff']:+.4f}, [{lo:+.4f}, {hi:+.4f}])"
    if hi < 0:
        return f"behind beyond noise ({c['diff']:+.4f}, [{lo:+.4f}, {hi:+.4f}])"
    return f"within noise ({c['diff']:+.4f}, [{lo:+.4f}, {hi:+.4f}] includes 0)"


def group_summary(group: dict) -> dict:
    """A group of `combine_runs` as plain JSON (results.json's "confirm" block): no run objects."""
    return {k: v for k, v in group.items() if k not in ("runs", "confirm")} | {"statement": confirm_statement(group),
                                                              "run_folders": [str(r.folder) for r in group["runs"]]}


def group_charts(group: dict, chart_dir: Path, prefix: str) -> dict[str, str]:
    """The group's two charts in `chart_dir`: test figures (mean, range over runs) and quality per compute
    (validation NDCG@10 against training time, every run); {kind: `prefix` + file name}."""
    title = f"{group['dataset']}, {group['protocol']}"
    chart_dir.mkdir(parents=True, exist_ok=True)
    path = chart_dir / f"{group['slug']}.png"
    means = {"dataset": title, "systems": {n: s["mean"] for n, s in group["systems"].items()}}
    spread = {n: s["range"] for n, s in group["systems"].items() if s["runs"] > 1}
    write_chart(means, path, spread, title=f"{title}\ntest split; bars: mean over runs, lines: lowest to highest run")
    out = {"test": prefix + path.name}
    curves = {n: [compute_curve(r.details.get(n, {}), r.results["systems"][n].get("wall_s")) for r in group["runs"] if n in r.results["systems"]]
              for n in group["systems"]}
    if any(c for runs in curves.values() for c in runs):
        cpath = chart_dir / f"{group['slug']}-compute.png"
        write_compute_chart(curves, cpath, f"{title}: validation NDCG@10 against training wall time")
        out["compute"] = prefix + cpath.name
    return out


def _cell(s: dict, k: str) -> str:
    if s["runs"] == 1:
        return _fmt(s["mean"][k])
    return f"{_fmt(s['mean'][k])} ± {_fmt(s['sd'][k])}"


def _short_commit(run: dict) -> str:
    if not run.get("commit"):
        return "not recorded"
    return f"`{run['commit'][:10]}`" + (" (with uncommitted changes)" if run.get("dirty") else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _synthetic(groups: list[dict]) -> bool:
    return any(g["dataset"].startswith("synthetic") for g in groups)


def results_document(groups: list[dict], command: str, charts: dict[str, dict[str, str]], note: str = "") -> str:
    """docs/results.md: which runs (commit, machine, command), one combined table per dataset and protocol
    (mean ± SD over runs, 95% interval over runs and users), its charts (test figures; quality per
    compute), the statement the figures support (best TTDS recipe vs strongest baseline, chosen on
    validation), the paired comparisons, what a confirmatory plan still lacks, then each run's own tables."""
    runs = [r for g in groups for r in g["runs"]]
    lines = ["# Results", "",
             f"Generated by `{command}` from {len(runs)} benchmark run(s) listed below; do not edit by hand, run the command again.",
             "How the figures are obtained (selection on validation, one test read per system and run) and how to produce",
             "new ones: [benchmark.md](benchmark.md). The history of what was tried: [findings.md](findings.md).", ""]
    if _synthetic(groups):
        lines += ["> **Placeholder.** These runs use the generated synthetic corpus, so the figures only show the format of",
                  "> this page; they say nothing about any recommender. They will be replaced by the confirmatory protocol's",
                  "> runs on Instruments and Scientific (issue 31).", ""]
    if note:
        lines += [note, ""]
    for g in groups:
        lines += group_markdown(g, charts.get(f"{g['dataset']}, {g['protocol']}", {}))
    lines += ["## Runs", "", "| run | dataset | protocol | training seed | commit | machine | written (UTC) | command |",
              "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        p = r.run
        cmd = f"`{p['command']}`" if p.get("command") else "not recorded"
        seed = "each system's own" if p.get("train_seed") is None else p["train_seed"]
        lines.append(f"| `{r.label}` | {r.dataset} | {_protocol(r)} | {seed} | {_short_commit(p)} | {p.get('machine') or 'not recorded'} "
                     f"| {p.get('written_utc') or '–'} | {cmd} |")
    for r in runs:
        lines += ["", f"### `{r.label}`", "", *system_table(r.results["systems"], r.details)]
        if r.results.get("cold_items"):  # the cold/warm split of every system (ttds.bench.cold), one level down
            from ttds.bench.cold import cold_table  # heavy (the catalogue code imports torch): only for cold runs
            lines += ["", *cold_table(r.results["cold_items"]).replace("## Cold items", "#### Cold items", 1).splitlines()]
        lines += paired_markdown(r.results.get("paired"))
        lines += diagnostics_markdown(r.results.get("diagnostics") or {})
    lines += ["", *paper_reference_markdown(), ""]
    return "\n".join(lines)


def _ci(s: dict) -> str:
    iv = s.get("interval") or {}
    if "ci95" not in iv:
        return "–"
    return f"[{iv['ci95'][0]:.4f}, {iv['ci95'][1]:.4f}]" + ("" if iv.get("runs_resampled") else " (users only)")


def _reads(s: dict) -> str:
    reads = s.get("test_reads") or []
    if not reads or any(x is None for x in reads):
        return "not recorded"
    return "once per seed" if all(x == 1 for x in reads) else f"{', '.join(map(str, reads))} (per seed)"


def group_markdown(g: dict, charts: dict[str, str]) -> list[str]:
    """One dataset and protocol: the combined table, charts, the statement, the paired comparisons, tuning, gaps."""
    title = f"{g['dataset']}, {g['protocol']}"
    first = g["runs"][0].run
    conf = g.get("confirm") or {}
    lines = [f"## {title}", "",
             f"{len(g['runs'])} run(s); {first.get('items', '?')} items, {first.get('test_users', '?')} test users"
             + (f"; budget per system and seed: {first['budget']}" if first.get("budget") else "") + ". "
             "Test figures; with several runs, mean ± SD over runs (seeds), and the 95% interval of test NDCG@10 over seeds and "
             "users (two-level bootstrap). Validation NDCG@10 is what selected each model and each comparison's sides.", "",
             "| system | runs (seeds) | " + " | ".join(_COMBINED) + " | NDCG@10 95% (seeds, users) | valid NDCG@10 | test read | mean wall s |",
             "|---" * (len(_COMBINED) + 6) + "|"]
    for name, s in g["systems"].items():
        seeds = ",".join(str(x) for x in s.get("seeds") or [] if x is not None)
        lines.append(f"| `{name}` | {s['runs']}{f' ({seeds})' if seeds else ''} | " + " | ".join(_cell(s, k) for k in _COMBINED)
                     + f" | {_ci(s)} | {_fmt(s['valid_NDCG@10'])} | {_reads(s)} | {s.get('wall_s', 0.0):.0f} |")
    if charts.get("test"):
        lines += ["", f"![{title}]({charts['test']})"]
    if charts.get("compute"):
        lines += ["", "Quality per compute: validation NDCG@10 after each epoch against the training wall time spent so far "
                      "(every seed; TTDS-family curves start after their tokenizer warm-up). Tuning trials are not included.",
                  "", f"![{title}: quality per compute]({charts['compute']})"]
    lines += ["", f"**Statement.** {confirm_statement(g)}"]
    paired = g["paired"]
    if paired.get("systems"):
        lines += ["", f"Paired against the strongest baseline on validation, `{paired['baseline']}`, over every run and test user "
                      "(the interval resamples runs and users):", ""]
        lines += [f"- `{n}`: " + (f"not available ({c['error']})" if "error" in c else recipe_sentence(n, paired["baseline"], c))
                  for n, c in paired["systems"].items()]
    lines += _tuning_markdown(conf) + _missing_markdown(g, conf)
    lines.append("")
    return lines


def _tuning_markdown(conf: dict) -> list[str]:
    tuning = conf.get("tuning") or {}
    if not tuning:
        return []
    out = ["", "Tuning on validation (Ray Tune; trials stop at validation, only the frozen recipe is tested):", "",
           "| system | trials | best valid NDCG@10 | chosen values | search wall s | frozen recipe |", "|---|---|---|---|---|---|"]
    for name, t in tuning.items():
        if "error" in t:
            out.append(f"| `{name}` | – | – | failed: {t['error'][:200]} | – | – |")
            continue
        if "pending" in t:  # a search stopped before its last trial: resumed by the same command
            out.append(f"| `{name}` | {t.get('trials', '–')} | {_fmt(t.get('best_valid_NDCG@10'))} (so far) | not frozen: {t['pending']} | – | – |")
            continue
        chosen = ", ".join(f"{k}={_value(v)}" for k, v in (t.get("params") or {}).items()) or "–"
        out.append(f"| `{name}` | {t.get('trials', '–')} | {_fmt(t.get('best_valid_NDCG@10'))} | {chosen} | {_fmt(t.get('wall_s'), 0)} "
                   f"| `{t.get('recipe', '–')}` |")
    return out


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _missing_markdown(g: dict, conf: dict) -> list[str]:
    """What the confirmatory plan (systems x seeds) still lacks in these runs, and how to add it."""
    plan = conf.get("plan") or {}
    if not plan:
        return []
    done = {n: set(s.get("seeds") or []) for n, s in g["systems"].items()}
    missing = [f"`{n}` seed {k}" for n in plan.get("systems", []) for k in range(plan.get("seeds", 0)) if k not in done.get(n, set())]
    out = ["", f"Plan: {', '.join(f'`{n}`' for n in plan.get('systems', []))} x {plan.get('seeds')} seeds"
               + (f", {plan['tune_trials']} tuning trials per trained system" if plan.get("tune_trials") else "") + "."]
    if plan.get("rescored_from"):
        out += ["", f"Not retrained: each trained (system, seed) here is the model tuned, trained and selected (epoch, recipe) on "
                    f"validation with seen items excluded (`{plan['rescored_from']}`), scored on test once more with every item "
                    "ranked (`--also-all-items`, ttds.bench.confirm); its `valid NDCG@10` is that seen-excluded figure (popularity, "
                    "which trains nothing, is computed afresh under this protocol)."]
    if missing:
        out += ["", "**Missing** (not in these figures): " + ", ".join(missing) + "."]
    if plan.get("ttds_missing"):
        out += ["", f"**Not run:** {plan['ttds_missing']}"]
    return out


def readme_table(groups: list[dict], link: str) -> str:
    """The README's one small table: test NDCG@10 (mean, runs) per dataset and system, a column per protocol
    (full-catalogue protocols only: a --cold-items run's figures are over warm items; the page has them, with its cold table)."""
    cold = [g for g in groups if "-cold" in g["slug"]]
    groups = [g for g in groups if g not in cold] or groups
    # one row per dataset and system, one column per protocol: both protocols and both corpora fit the README's 10 KB
    protocols = sorted(dict.fromkeys(g["protocol"] for g in groups), key=lambda p: p != _PROTOCOLS[True][0])  # seen-excluded first
    lines = ["| dataset | system | " + " | ".join(f"test NDCG@10, {p} (runs)" for p in protocols) + " |", "|---|---|" + "---|" * len(protocols)]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for g in groups:
        for name, s in g["systems"].items():
            cells.setdefault((g["dataset"], name), {})[g["protocol"]] = f"{_fmt(s['mean']['NDCG@10'])} ({s['runs']})"
    for (dataset, name), row in cells.items():
        lines.append(f"| {dataset} | `{name}` | " + " | ".join(row.get(p, "–") for p in protocols) + " |")
    lines += ["", "Mean over runs (training seeds); HR@10, the spread and the intervals are on the page."]
    commits = sorted({_short_commit(r.run) for g in groups for r in g["runs"]})
    lines += ["", f"Generated from the benchmark runs in [{link}]({link}) (commit {', '.join(commits)}), with their machines and commands."]
    if cold and groups is not cold:
        lines.append(f"New (cold) items, held out of training: the same page, {', '.join(g['dataset'] for g in cold)}.")
    if _synthetic(groups):
        lines.append("Placeholder: a synthetic corpus, until the confirmatory protocol's runs replace it.")
    if any(g["paired"] and g["paired"].get("best_ttds") is None for g in groups):
        lines.append("No TTDS-family system in these figures yet: they support no claim about TTDS (the page says what is missing).")
    elif any((_headline_runs(g) or CLAIM_SEEDS) < CLAIM_SEEDS for g in groups):
        lines.append(f"Fewer than {CLAIM_SEEDS} seeds on a side of the TTDS comparison: no claim yet (the page says what is missing).")
    statements = [_readme_statement(g) for g in groups if (_headline_runs(g) or 0) >= CLAIM_SEEDS]
    if any(statements):
        lines += ["", "The best TTDS recipe against the strongest baseline, both chosen on validation (test NDCG@10 difference, 95% over seeds and users):", ""]
        lines += [f"- {s}" for s in statements if s]
    return "\n".join(lines)


def _readme_statement(g: dict) -> str:
    """One README line per (dataset, protocol) whose headline comparison has enough seeds for a claim."""
    best, base = g["paired"]["best_ttds"], g["paired"]["baseline"]
    c = g["paired"]["systems"].get(best, {})
    return "" if "error" in c else f"{g['dataset']}, {g['protocol']}: `{best}` against `{base}`, {_beyond(c, best, base)}."


def update_readme(readme: Path, table: str) -> None:
    """Replace what lies between README_BEGIN and README_END with `table` (the markers stay)."""
    text = readme.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"{readme}: needs the markers {README_BEGIN} and {README_END}, in that order, around the results table")
    readme.write_text(text[: start + len(README_BEGIN)] + "\n" + table + "\n" + text[end:])


def write_document(run_folders: list[str | Path], out: Path, command: str, readme: Path | None = None, note: str = "") -> dict[str, Path]:
    """Render `out` (docs/results.md) and its charts (`<out stem>/<dataset-protocol>.png` and `-compute.png`) from
    benchmark folders (a confirmatory folder stands for its seeds); with `readme`, rewrite its table between the
    markers. Returns the written paths."""
    if not run_folders:
        raise ValueError("no benchmark folders given")
    runs = [r for f in sorted({str(f) for f in run_folders}) for r in load_runs(f)]
    groups = combine_runs(runs)
    out = Path(out)
    chart_dir = out.parent / out.stem
    paths: dict[str, Path] = {}
    charts = {}
    for g in groups:
        title = f"{g['dataset']}, {g['protocol']}"
        charts[title] = group_charts(g, chart_dir, f"{chart_dir.name}/")
        paths[f"chart:{title}"] = chart_dir / f"{g['slug']}.png"
        if "compute" in charts[title]:
            paths[f"compute:{title}"] = chart_dir / f"{g['slug']}-compute.png"
    out.write_text(results_document(groups, command, charts, note))
    paths["md"] = out
    if readme is not None:
        update_readme(Path(readme), readme_table(groups, _relative(out, Path(readme).parent)))
        paths["readme"] = Path(readme)
    return paths


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
