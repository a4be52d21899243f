"""Ranking: turn a batch of prompts into ranked catalogue items. Offline evaluation (`ttds.eval`)
and serving (`ttds.serve.recommender`) both call these functions, so what is evaluated is what
is served.

- `trie`: the valid item IDs as a flat-tensor prefix trie (`build_trie` from a model's table);
- `beam`: batched, KV-cached beam search constrained by the trie (`rank_beam`);
- `item_head`: one forward, the item head's logits (`rank_item_head`);
- `retrieval`: one forward, the L_ID head into X space, searched in `item_index.ItemIndex`, the
  one faiss index (CPU, or GPU when faiss sees one) (`rank_retrieval`; the query is the model's,
  `ttds.llm.queries.prompt_queries`);
- `popularity`: training counts as a ranker (the floor);
- `seen`: the seen-item filter; `ties`: the tie rule and `top_k`; `pad`: the one `left_pad`;
- `next_item`: users' evaluation prompts and `rank_next_items`.
Every ranker returns `Ranked(items, scores)`, best first, ties by `ttds.rank.ties`.
"""

from ttds.rank.beam import BeamConfig, BeamResult, Ranked, beam_search, rank_beam
from ttds.rank.item_head import item_head_scores, rank_item_head
from ttds.rank.item_index import ItemIndex, normalise
from ttds.rank.next_item import next_item_prompts, rank_next_items
from ttds.rank.pad import Padded, left_pad, prompt_batches
from ttds.rank.popularity import rank_popularity
from ttds.rank.retrieval import pool_of, rank_retrieval
from ttds.rank.seen import exclusion_table, keep_unseen, mask_seen, unseen_positions
from ttds.rank.ties import TIE_SEED, query_key, query_keys, tie_values, top_k
from ttds.rank.trie import PrefixTrie, build_trie

__all__ = [
    "BeamConfig", "BeamResult", "ItemIndex", "Padded", "PrefixTrie", "Ranked", "TIE_SEED", "beam_search", "build_trie",
    "exclusion_table", "item_head_scores", "keep_unseen", "left_pad", "mask_seen", "next_item_prompts", "normalise",
    "pool_of", "prompt_batches", "query_key", "query_keys", "rank_beam", "rank_item_head",
    "rank_next_items", "rank_popularity", "rank_retrieval", "tie_values", "top_k", "unseen_positions",
]
