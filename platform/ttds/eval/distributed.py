"""Full test-set evaluation of a saved model folder, spread over Ray Data actors.

Each actor loads the model once and ranks its batches of users for every template; the
driver only sums metrics, so the evaluation scales with the number of actors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ttds.data.corpus import Corpus
from ttds.eval.evaluate import average
from ttds.eval.metrics import MetricAccumulator, check_user_count
from ttds.eval.per_user import per_user_table, write_per_user
from ttds.llm.model_io import load_model, prompt_builder
from ttds.rank.beam import BeamConfig
from ttds.rank.new_items import first_new_item, new_item_rule
from ttds.rank.next_item import rank_next_items
from ttds.rank.popularity import rank_popularity
from ttds.rank.trie import build_trie


class _Ranker:
    def __init__(self, model_dir: str, templates: list[int], beam_width: int, top_k: int, batch_size: int, threads: int = 1, use_gpu: bool = False,
                 exclude_seen: bool = False, popularity_prior: float = 0.0, corpus_dir: str | None = None, rank_by: str = "beam",
                 new_item_share: float = 0.0):
        import torch

        torch.set_num_threads(threads)
        # on a GPU node each actor holds a fraction of the GPU (Ray sets CUDA_VISIBLE_DEVICES)
        m = load_model(model_dir, device="cuda" if use_gpu else None)
        self.backbone = m.model.backbone.eval()
        self.item_head = m.model.item_head if rank_by == "item_head" else None
        self.builder = prompt_builder(m)
        self.trie = build_trie(self.builder, len(m.tokenizer))
        self.max_history = int(m.meta["max_history"])
        self.templates, self.batch_size, self.exclude_seen = templates, batch_size, exclude_seen
        self.beam = BeamConfig(beam_width=beam_width, top_k=top_k)
        self.new_items = new_item_rule(self.trie, m.items.levels, len(m.items), first_new_item(m.meta), new_item_share)
        self.node_bias = None
        if popularity_prior:  # log P(ID | prompt) - g log(1 + training count), applied inside the search
            # counted here from the corpus folder: a catalogue-sized list as a constructor argument would
            # go through the object store (Ray warns that a restarted actor could not get it back)
            counts = Corpus.open(corpus_dir).item_popularity().astype(np.float64)
            self.node_bias = self.trie.prior_bias(counts + 1.0, popularity_prior)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import torch

        out = {"user_id": batch["user_id"].to_numpy(), "target": batch["target"].to_numpy()}
        with torch.no_grad():
            for t in self.templates:
                ranked = rank_next_items(self.backbone, self.builder, self.trie, batch["user_id"], batch["history"], t, self.beam, self.max_history, self.batch_size,
                                         exclude_seen=self.exclude_seen, node_bias=self.node_bias, item_head=self.item_head,
                                         new_items=self.new_items)
                out[f"ranked_{t}"] = list(ranked)
        return pd.DataFrame(out)


RANK_BY = ("beam", "item_head")


def check_rank_by(rank_by: str, model_dir: str | Path | None = None, popularity_prior: float = 0.0) -> None:
    """Refuse an unknown ranker, the item head of a model folder that has none, or a popularity
    prior that is negative or meant for another ranker (before any actor starts)."""
    if popularity_prior < 0:
        raise ValueError(f"popularity_prior must be >= 0, got {popularity_prior}")
    if rank_by == "item_head" and popularity_prior:
        raise ValueError("popularity_prior applies to beam search only, not to rank_by='item_head'")
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {', '.join(RANK_BY)}, not {rank_by!r}")
    if rank_by == "item_head" and model_dir is not None and not (Path(model_dir) / "item_head.safetensors").exists():
        raise ValueError(f"{model_dir} has no item head: train with --loss.item_head_weight > 0 to rank by it")


def evaluate_model_dir(
    model_dir: str,
    corpus: Corpus,
    split: str = "test",
    templates: list[int] | None = None,
    beam_width: int = 20,
    top_k: int = 10,
    users: int = 0,
    workers: int = 2,
    batch_size: int = 64,
    seed: int = 0,
    use_gpu: bool = False,
    per_user_path: str | Path | None = None,
    exclude_seen: bool = False,
    popularity_prior: float = 0.0,
    rank_by: str = "beam",
    new_item_share: float = 0.0,
) -> dict:
    """HR@1/5/10, NDCG@5/10 averaged over templates, plus each template's figures.

    `use_gpu`: the ranking actors share one GPU (1/workers each) and decode on it in bf16.
    `per_user_path`: also write each user's figures there (`ttds.eval.per_user`), for paired tests.
    `exclude_seen`: keep each user's history items out of its ranking (popularity too).
    `popularity_prior`: g > 0 ranks by log P(ID | prompt) - g log(1 + training count) inside the
    beam search (`PrefixTrie.prior_bias`): trades head accuracy for coverage of less popular items.
    `rank_by`: "beam" (constrained beam search over IDs) or "item_head" (the model's item head,
    `ttds.rank.item_head`; the model must have been trained with `loss.item_head_weight` > 0).
    `new_item_share`: beam search's top-k share open to items added after training
    (`ttds.rank.new_items`; eval.new_item_share); no effect on a model without added items.
    """
    check_rank_by(rank_by, model_dir, popularity_prior)
    import ray.data

    uids, hists, targets = corpus.eval_arrays(split)
    if users and users < len(uids):
        pick = np.sort(np.random.default_rng(seed).choice(len(uids), users, replace=False))
        uids, hists, targets = uids[pick], [hists[i] for i in pick], targets[pick]
    if templates is None:
        templates = [0]
    df = pd.DataFrame({"user_id": uids, "history": [h.tolist() for h in hists], "target": targets})
    ds = ray.data.from_pandas(df).repartition(max(workers * 4, 1))
    ranked = ds.map_batches(
        _Ranker,
        fn_constructor_kwargs={"model_dir": str(model_dir), "templates": templates, "beam_width": beam_width, "top_k": top_k, "batch_size": batch_size, "use_gpu": use_gpu,
                               "exclude_seen": exclude_seen, "popularity_prior": popularity_prior, "rank_by": rank_by,
                               "new_item_share": new_item_share,
                               "corpus_dir": str(Path(corpus.root).resolve())},
        batch_size=256,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=0.5,  # fractional: leaves CPU for the tasks that feed the actors
        **({"num_gpus": 1.0 / max(workers, 1)} if use_gpu else {}),
    ).to_pandas()
    check_user_count(len(ranked), len(df), f"{split} split, Ray Data ranking")
    if ranked["user_id"].nunique() != len(df):
        raise RuntimeError(f"the Ray Data ranking returned {ranked['user_id'].nunique()} distinct users for {len(df)} in the {split} split")
    lists = {t: np.stack(ranked[f"ranked_{t}"].to_numpy()) for t in templates}
    accs = {t: MetricAccumulator(ks=(1, 5, 10)).update(mat, ranked["target"].to_numpy()) for t, mat in lists.items()}
    result = average(accs)
    result["split"] = split
    result["exclude_seen"] = exclude_seen
    result["rank_by"] = rank_by
    if rank_by == "beam" and first_new_item(json.loads((Path(model_dir) / "ttds.json").read_text())) is not None:
        result["new_item_share"] = new_item_share
    if popularity_prior:
        result["popularity_prior"] = popularity_prior
    if per_user_path is not None:
        write_per_user(per_user_path, per_user_table(ranked["user_id"].to_numpy(), ranked["target"].to_numpy(), list(lists.values())))
    # popularity on exactly the same users, so the two rows of a table are comparable
    pop = rank_popularity(corpus.item_popularity(), top_k, hists, exclude_seen)  # the users of `df` (the same set as `ranked`)
    result["popularity"] = MetricAccumulator(ks=(1, 5, 10)).update(pop, np.asarray(targets)).result()
    return result
