"""Full-ranking evaluation of a trained TTDS model through the retrieval fast path.

Same users, same prompts (`next_item_prompts`, the beam evaluation's), same templates averaged,
same metric code (`MetricAccumulator`, `average`) and the same ranker serving runs
(`ttds.rank.retrieval.rank_retrieval`: id_head + the exact faiss index over item X instead of
constrained beam search). It runs in the driver: one forward per user is cheap next to beam search.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ttds.data.corpus import Corpus
from ttds.eval.evaluate import average
from ttds.eval.metrics import MetricAccumulator, check_user_count
from ttds.eval.per_user import per_user_table, write_per_user
from ttds.llm.model_io import load_model, prompt_builder
from ttds.rank.item_index import ItemIndex
from ttds.rank.next_item import next_item_prompts
from ttds.rank.retrieval import pool_of, rank_retrieval
from ttds.runtime import select_device

__all__ = ["evaluate_retrieval", "load_retrieval"]


def load_retrieval(model_dir: str | Path, device: str = "auto"):
    """(backbone, id_head, builder, ItemIndex, max_history, pool) of a saved model folder."""
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    feats = model_dir / "features.safetensors"
    if not feats.exists():
        raise FileNotFoundError(f"{model_dir} has no features.safetensors: the retrieval path needs item X")
    m = load_model(model_dir, device=select_device(device).device)
    builder = prompt_builder(m)
    index = ItemIndex(load_file(str(feats))["item_x"])
    return m.model.backbone.eval(), m.model.id_head.eval(), builder, index, int(m.meta["max_history"]), pool_of(m.meta)


def evaluate_retrieval(
    model_dir: str | Path, corpus: Corpus, split: str = "test", templates: list[int] | None = None, k: int = 10,
    users: int = 0, batch_size: int = 64, seed: int = 0, device: str = "auto", per_user_path: str | Path | None = None,
    exclude_seen: bool = False,
) -> dict:
    """HR@1/5/10, NDCG@5/10 averaged over templates (+ per template, users, wall_s, users_per_s);
    each user's figures also go to `per_user_path` when given (`ttds.eval.per_user`)."""
    backbone, head, builder, index, max_history, pool = load_retrieval(model_dir, device)
    uids, hists, targets = corpus.eval_arrays(split)
    expected = len(uids)
    if users and users < len(uids):
        pick = np.sort(np.random.default_rng(seed).choice(len(uids), users, replace=False))
        uids, hists, targets = uids[pick], [hists[i] for i in pick], targets[pick]
        expected = users
    templates = templates if templates is not None else [0]
    t0 = time.time()
    accs, lists = {}, []
    seen = hists if exclude_seen else None
    for t in templates:
        prompts = next_item_prompts(builder, uids, hists, t, max_history)
        ranked = rank_retrieval(backbone, head, index, prompts, k, pad_id=builder.pad_id, pool=pool, batch_size=batch_size, seen=seen).items
        accs[t] = MetricAccumulator(ks=(1, 5, 10)).update(ranked, np.asarray(targets))
        check_user_count(accs[t].count, expected, f"retrieval on {split}, template {t}")
        lists.append(ranked)
    wall = time.time() - t0
    if per_user_path is not None:
        write_per_user(per_user_path, per_user_table(uids, targets, lists))
    out = average(accs)
    out.update(split=split, pool=pool, exclude_seen=exclude_seen, wall_s=round(wall, 2), users_per_s=round(len(uids) * len(templates) / max(wall, 1e-9), 1))
    return out
