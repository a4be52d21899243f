"""Does a trained model read its next-item answer off the user's semantic ID?

Why: the user tower quantises a user vector X built from the user's *training* items, and those
items are the next-item training targets. A model that learns to decode targets from the ID
scores far better on training targets than on held-out items, and the gap shows up as a loss on
test. The check ranks, for sampled users, (a) their last training item given the items before
it and (b) their validation item, once with the user's own ID in the prompt and once with
another sampled user's ID (same histories). If the ID carried no target information, own and
other would score alike on (a); a large gap on (a) and little on (b) is the leak.
A model trained without user IDs in next-item prompts (the default) scores own == other.
"""

from __future__ import annotations

import numpy as np
import torch

from ttds.data.corpus import Corpus
from ttds.eval.metrics import MetricAccumulator
from ttds.llm.model_io import load_model, prompt_builder
from ttds.rank.beam import BeamConfig
from ttds.rank.next_item import rank_next_items
from ttds.rank.trie import build_trie


def user_id_leak(model_dir: str, users: int = 2000, seed: int = 0, beam_width: int = 20, batch_size: int = 64, template: int = 0) -> dict:
    """{"prompts_carry_user_id", "users", "train_last": {mode: metrics}, "valid": {mode: metrics}}."""
    lm = load_model(model_dir)
    if lm.users is None:
        raise ValueError(f"{model_dir} has no user ID table (a single-tower model): nothing to check")
    builder = prompt_builder(lm)
    trie = build_trie(builder, len(lm.tokenizer))
    corpus = Corpus.open(lm.meta["corpus_dir"])
    max_history = int(lm.meta["max_history"])
    rng = np.random.default_rng(seed)
    seqs = corpus.train_sequences
    eligible = np.array([u for u in range(len(seqs)) if len(seqs[u]) >= 2])
    tu = np.sort(rng.choice(eligible, min(users, len(eligible)), replace=False))
    vu, vh, vt = corpus.eval_arrays("valid")
    pick = np.sort(rng.choice(len(vu), min(users, len(vu)), replace=False))
    cases = {
        "train_last": (tu, [seqs[u][:-1] for u in tu], np.array([seqs[u][-1] for u in tu])),
        "valid": (vu[pick], [vh[i] for i in pick], vt[pick]),
    }
    beam = BeamConfig(beam_width=beam_width, top_k=10)
    backbone = lm.model.backbone.eval()
    out: dict = {"prompts_carry_user_id": builder.next_item_user_id, "users": int(len(tu))}
    with torch.no_grad():
        for name, (uids, hists, targets) in cases.items():
            out[name] = {}
            for mode, ids in (("own_id", uids), ("other_user_id", rng.permutation(uids))):
                ranked = rank_next_items(backbone, builder, trie, ids, hists, template, beam, max_history, batch_size)
                out[name][mode] = MetricAccumulator(ks=(1, 5, 10)).update(ranked, targets).result()
    return out


def leak_table(res: dict) -> str:
    rows = ["| items ranked | user ID in prompt | HR@1 | HR@10 | NDCG@10 |", "|---|---|---|---|---|"]
    for name in ("train_last", "valid"):
        for mode, m in res[name].items():
            rows.append(f"| {name} | {mode} | {m['HR@1']:.4f} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} |")
    return "\n".join(rows)
