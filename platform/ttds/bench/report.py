"""Write the benchmark's results: results.json, results.md (table, paper reference, perf) and a PNG chart.

results.json has exactly the issue's shape:
  {"dataset": ..., "systems": {name: {"HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "wall_s",
   "peak_rss_mb", "config"}}, "perf": {...}}
Everything else (validation figures, epochs, memory per process, histories) goes to
details.json, so the table can say how each figure was obtained without changing that shape.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["METRICS", "PAPER_INSTRUMENTS", "results_markdown", "write_chart", "write_results"]

METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10")
SYSTEM_KEYS = (*METRICS, "wall_s", "peak_rss_mb", "config")

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
    best = best_per_column(systems)
    lines = [
        f"# Benchmark on {results['dataset']}: full-ranking leave-one-out test split",
        "",
        "Every system is trained on the train split, selected on the validation split (early stopping on",
        "validation NDCG@10, best epoch kept) and scored ONCE on the test split by the same full-ranking code",
        f"(`ttds.eval.metrics`): each user's held-out item ranked against all {meta.get('items', '?')} items, "
        + ("each user's history items EXCLUDED from its ranking (--exclude-seen, RecBole's full-sort protocol)"
           if meta.get("exclude_seen") else "history items not excluded (the paper's protocol; --exclude-seen removes them)")
        + f", {meta.get('test_users', '?')} test users. TTDS-family rows average the next-item templates, as the paper.",
        f"Budget per system: {meta.get('budget', '?')}.",
        "",
        "| system | " + " | ".join(METRICS) + " | valid NDCG@10 | best/run epochs | wall s | peak RSS MB (largest process) |",
        "|---" * (len(METRICS) + 5) + "|",
    ]
    for name, s in systems.items():
        d = details.get(name, {})
        cells = [f"**{_fmt(s[k])}**" if s[k] == best[k] else _fmt(s[k]) for k in METRICS]
        epochs = f"{d['best_epoch'] + 1}/{d['epochs_run']}" if d.get("best_epoch") is not None and d.get("epochs_run") else "–"
        label = d.get("label", name) + (f" (`{name}`)" if d.get("label", name) != name else "")
        lines.append(
            f"| {label} | " + " | ".join(cells)
            + f" | {_fmt(d.get('valid_NDCG@10'))} | {epochs} | {s['wall_s']:.0f} | {s['peak_rss_mb']:.0f} |"
        )
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
        "## Reference: the paper's reported Instruments test figures (NOT measured here)",
        "",
        "From the TTDS paper (arXiv 2409.09253), Instruments. Listed for comparison only; they were not produced",
        "by this platform, and only the measured table above is this run's result.",
        "",
        "| system (paper's figures) | " + " | ".join(METRICS) + " |",
        "|---" * (len(METRICS) + 1) + "|",
    ]
    for name, row in PAPER_INSTRUMENTS.items():
        lines.append(f"| {name} (paper) | " + " | ".join(_fmt(row.get(k)) for k in METRICS) + " |")
    if results.get("perf"):
        lines += ["", "## Speed and memory (`--perf`)", ""] + perf_markdown(results["perf"])
    lines += ["", f"Chart: `{meta.get('chart', 'results.png')}`. Exact configs: results.json (`config` per system).", ""]
    return "\n".join(lines)


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
    rows = (paired or {}).get("systems", {})
    if rows:
        from ttds.bench.paired import paired_sentence

        lines += ["", f"Paired test against `{paired['baseline']}` (per-user {paired['metric']} differences on the same test users):", ""]
        lines += [f"- `{n}`: " + (f"not available ({c['error']})" if "error" in c else paired_sentence(n, paired["baseline"], c)) for n, c in rows.items()]
    return lines


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


def write_chart(results: dict, path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per system."""
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
        vals = [systems[name][k] for k in METRICS]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, METRICS)
    ax.set_ylabel("test metric (full ranking)")
    ax.set_title(f"{results['dataset']}: test split, best-validation models")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(out: Path, results: dict, details: dict, meta: dict) -> dict[str, Path]:
    """results.json, details.json, results.png, results.md in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for name, s in results["systems"].items():
        missing = [k for k in SYSTEM_KEYS if k not in s]
        if missing or set(s) != set(SYSTEM_KEYS):
            raise ValueError(f"system {name}: results.json keys must be exactly {SYSTEM_KEYS}, missing {missing}")
    paths = {"json": out / "results.json", "details": out / "details.json", "chart": out / "results.png", "md": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=2, default=float))
    paths["details"].write_text(json.dumps(details, indent=2, default=float))
    if results["systems"]:
        write_chart(results, paths["chart"])
    paths["md"].write_text(results_markdown(results, details, {**meta, "chart": paths["chart"].name}))
    return paths
