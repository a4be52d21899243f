"""The benchmark's cold-item figures (`--cold-items F`, protocol in `ttds.data.cold_items`).

Every system trains on the warm corpus as usual (its main table row is that run's test, over
warm items). Then each is tested once more on the full corpus, every item a candidate, and
its HR/NDCG@10 are reported apart for the test users whose target is a cold item and for the
rest (warm):

- popularity, SASRec, GRU4Rec have no count or embedding for an item they never saw: they
  cannot rank a cold item, so their cold figures are 0 by construction, and their warm figures
  are their main run's (they rank exactly as there: a cold item can never enter their top 10,
  and a cold item in a history is one they cannot read);
- content kNN ranks the full catalogue by text (`ttds.baselines.content_knn`);
- a TTDS-family model is extended with the cold items' text (`ttds.serve.catalogue`: IDs from the
  item tower, added to the trie) and evaluated over the extended catalogue by its own ranker
  (its row) and by beam search with and without the new-item rule (extra rows, "name (beam)"
  and "name (beam-plain)"): beam search gives a cold item the LLM's probability of its ID, which
  is low for an ID never seen as a target, so the rule (`ttds.rank.new_items`) opens a share of
  the top 10 to cold items sharing a result's ID prefix; a model ranked by its item head scores
  a cold item by the row it got from its semantic neighbours (the mean of the rows of trained
  items sharing its longest code prefix), since no row was ever trained for it. Each TTDS row's
  cold-target users are compared with content kNN's, paired over users (HR@10).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ttds.baselines.content_knn import evaluate_content_knn
from ttds.bench.paired import paired_comparison, paired_sentence
from ttds.data.cold_items import ColdSplit
from ttds.eval.distributed import evaluate_model_dir
from ttds.eval.per_user import read_per_user
from ttds.serve.catalogue import HEAD_RULE, ExtendConfig, extend_model

log = logging.getLogger(__name__)

__all__ = ["COLD_FILE", "cold_figures", "cold_summary", "cold_table"]

COLD_FILE = "cold.json"
COLD_PER_USER = "cold_per_user.parquet"
CANNOT = "cannot rank items unseen in training (no embedding or count for them): cold figures are 0 by construction"
KEYS = ("HR@10", "NDCG@10")


def _part(df: pd.DataFrame) -> dict:
    return {"users": int(len(df)), **{k: float(df[k].mean()) if len(df) else 0.0 for k in KEYS}}


def split_per_user(per_user: pd.DataFrame, split: ColdSplit) -> dict:
    """{"cold": {users, HR@10, NDCG@10}, "warm": {...}} of a full-corpus per-user table."""
    cold = split.is_cold(per_user["target"].to_numpy())
    return {"cold": _part(per_user[cold]), "warm": _part(per_user[~cold])}


def cold_targets(split: ColdSplit) -> int:
    _, _, targets = split.full.eval_arrays("test")
    return int(split.is_cold(targets).sum())


def cold_figures(kind: str, sysdir: Path, split: ColdSplit, exclude_seen: bool, tcfg=None, content_vectors: np.ndarray | None = None,
                 use_gpu: bool = False) -> dict:
    """One system's cold/warm figures (cached in `sysdir/cold.json`: a reused system is not re-run)."""
    cache = sysdir / COLD_FILE
    if cache.exists():
        cached = json.loads(cache.read_text())
        if kind != "ttds" or cached.get("new_item_share") == tcfg.eval.new_item_share:
            return cached

    if kind in ("popularity", "seq"):
        warm = read_per_user(sysdir)  # the main run: its test users are exactly the warm-target users
        out = {"cold": {"users": cold_targets(split), "HR@10": 0.0, "NDCG@10": 0.0}, "warm": _part(warm), "note": CANNOT}
    elif kind == "content":
        evaluate_content_knn(split.full, content_vectors, "test", exclude_seen, per_user_path=sysdir / COLD_PER_USER)
        out = {**split_per_user(read_per_user(sysdir / COLD_PER_USER), split), "note": "text vectors of every item, the cold ones included"}
    elif kind == "ttds":
        ext = sysdir / "model-cold"
        if not (ext / "ttds.json").exists():
            extend_model(ExtendConfig(model_dir=str(sysdir / "model"), out_dir=str(ext)), items=split.cold_items())
        meta = json.loads((ext / "ttds.json").read_text())["catalogue"]
        runs = _ttds_rankings(tcfg)
        cached_share = json.loads(cache.read_text()).get("new_item_share") if cache.exists() else None
        figs = {}
        for label, (rank_by, share, how) in runs.items():
            path = sysdir / (COLD_PER_USER if not figs else f"cold_per_user_{label}.parquet")
            if not path.exists() or (rank_by == "beam" and share > 0 and cached_share not in (None, share)):
                templates = tcfg.eval.template_ids()
                evaluate_model_dir(str(ext), split.full, "test", templates, tcfg.eval.beam_width, tcfg.eval.top_k, tcfg.eval.test_users,
                                   tcfg.eval.workers, tcfg.eval.batch_size, use_gpu=use_gpu, per_user_path=path,
                                   exclude_seen=exclude_seen, rank_by=rank_by, new_item_share=share)
            figs[label] = {**split_per_user(read_per_user(path), split), "per_user": path.name,
                           "note": f"model extended with the cold items' text ({meta['encoder']}; {len(meta['old_ids_changed'])} trained "
                                   f"IDs gained a suffix), ranked by {how}"}
        first, *more = figs
        out = {**figs[first], "rankers": {label: figs[label] for label in more}, "new_item_share": tcfg.eval.new_item_share}
    else:
        return {"note": "not measured for this kind of system"}
    cache.write_text(json.dumps(out, indent=2))
    return out


def _ttds_rankings(tcfg) -> dict[str, tuple[str, float, str]]:
    """{label: (rank_by, new_item_share, how)}: the recipe's own ranker first (its figures are the
    system's row), then beam search with and without the new-item rule (`ttds.rank.new_items`),
    so the table shows what the rule changes on cold and on warm users."""
    share = tcfg.eval.new_item_share
    rule = f"beam search over the extended trie + the new-item rule (share {share:g} of the top 10, ttds.rank.new_items)"
    plain = "plain beam search over the extended trie (no new-item rule)"
    if tcfg.eval.rank_by == "item_head":
        return {"item_head": ("item_head", 0.0, "the item head; a cold item's row: " + HEAD_RULE),
                "beam": ("beam", share, rule), "beam-plain": ("beam", 0.0, plain)}
    return {"beam": ("beam", share, rule), "beam-plain": ("beam", 0.0, plain)}


def cold_summary(split: ColdSplit, figures: dict[str, dict], details: dict[str, dict], reference: str | Path | None = None) -> dict:
    """results.json's "cold_items": the protocol, every system's figures, each TTDS-family
    system vs content kNN on the cold-target users (paired over users, HR@10), and with
    `reference` (a benchmark folder of the same systems trained without cold items) each TTDS
    system's warm-target users, ranked by its recipe's ranker, vs that system's main run there
    (paired NDCG@10; user ids are the same in both corpora, `ttds.data.cold_items`)."""
    systems = {}
    for name, f in figures.items():
        systems[name] = {k: v for k, v in f.items() if k != "rankers"}
        for label, g in f.get("rankers", {}).items():
            systems[f"{name} ({label})"] = g
    out = {"fraction": split.full.manifest.get("cold_items", {}).get("fraction"), "rule": split.rule, "cold_items": split.n_cold,
           "warm_items": split.n_warm, "test_users_cold_target": cold_targets(split), "systems": systems}
    knn = details.get("content-knn")
    if knn and (Path(knn["out_dir"]) / COLD_PER_USER).exists():
        base = read_per_user(Path(knn["out_dir"]) / COLD_PER_USER)
        base = base[split.is_cold(base["target"].to_numpy())]
        paired = {}
        for name, d in details.items():
            if d.get("kind") != "ttds":
                continue
            for label, f in systems.items():
                if (label == name or label.startswith(f"{name} (")) and f.get("per_user") and (Path(d["out_dir"]) / f["per_user"]).exists():
                    mine = read_per_user(Path(d["out_dir"]) / f["per_user"])
                    paired[label] = paired_comparison(mine[split.is_cold(mine["target"].to_numpy())], base, metric="HR@10")
        if paired:
            out["paired_vs_content_knn_cold"] = paired
    if reference:
        out["reference"] = str(reference)
        warm_paired = {}
        for name, d in details.items():
            ref_dir = Path(reference) / "systems" / name
            if d.get("kind") != "ttds" or not (ref_dir / "result.json").exists():
                continue
            # the recipe's own ranker only: the reference's main run ranked with it (a beam row against an
            # item-head reference would measure the rankers, not what holding items out cost)
            f = systems.get(name, {})
            if f.get("per_user") and (Path(d["out_dir"]) / f["per_user"]).exists():
                mine = read_per_user(Path(d["out_dir"]) / f["per_user"])
                warm_paired[name] = paired_comparison(mine[~split.is_cold(mine["target"].to_numpy())], read_per_user(ref_dir),
                                                      metric="NDCG@10")
        if warm_paired:
            out["paired_warm_vs_reference"] = warm_paired
    return out


def cold_table(summary: dict) -> str:
    """Markdown of the cold/warm figures (written to cold_items.md from results.json)."""
    lines = [f"## Cold items ({summary['cold_items']} of {summary['cold_items'] + summary['warm_items']} items held out of training, "
             f"{summary['rule']}; {summary['test_users_cold_target']} test users have a cold target)", "",
             "| system | cold HR@10 | cold NDCG@10 | cold users | warm HR@10 | warm NDCG@10 | warm users | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, f in summary["systems"].items():
        if "cold" not in f:
            lines.append(f"| {name} | | | | | | | {f.get('note', f.get('error', ''))} |")
            continue
        c, w = f["cold"], f["warm"]
        lines.append(f"| {name} | {c['HR@10']:.4f} | {c['NDCG@10']:.4f} | {c['users']} | {w['HR@10']:.4f} | {w['NDCG@10']:.4f} | "
                     f"{w['users']} | {f.get('note', '')} |")

    for name, p in summary.get("paired_vs_content_knn_cold", {}).items():
        lines += ["", f"- cold-target users, {paired_sentence(name, 'content-knn', p)}"]
    for name, p in summary.get("paired_warm_vs_reference", {}).items():
        lines += ["", f"- warm-target users, {paired_sentence(name, 'the same recipe trained without cold items', p)} "
                      f"(reference: {summary['reference']})"]
    return "\n".join(lines) + "\n"
