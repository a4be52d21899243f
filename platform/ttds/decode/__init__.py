"""Decoding: turn a prompt into a ranked list of catalogue items.

`trie.PrefixTrie` holds the valid semantic IDs as flat tensors; `beam.beam_search` runs a
batched, KV-cached beam search constrained by it.
"""

from ttds.decode.beam import BeamConfig, BeamResult, beam_search, left_pad, rank_items
from ttds.decode.trie import PrefixTrie

__all__ = ["BeamConfig", "BeamResult", "PrefixTrie", "beam_search", "left_pad", "rank_items"]
