"""Speed check: trie-constrained vs unconstrained beam search of the same width.

Why: the constraint must be cheap next to the model, or full-catalogue evaluation gets slow.
Target: constrained decoding costs at most 20% more than unconstrained.

Setup: a tiny random Llama, ~10k random 4-token item IDs (token j drawn from codebook j,
4 codebooks x 256 on top of a small base vocabulary: ~1100 tokens), left-padded prompts of
varied length that look like short item histories. Prints users/s for both and the ratio.

    python benchmarks/decode_speed.py [--items 10000 --batch 64 --beam 20 --hidden 64 ...]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ttds.decode import BeamConfig, PrefixTrie, beam_search, left_pad


@dataclass
class SpeedConfig:
    """Benchmark knobs; defaults are the agreed reference setting."""

    n_items: int = 10_000
    code_len: int = 4
    codebook_size: int = 256
    base_vocab: int = 76  # 76 + 4 * 256 = 1100 tokens
    batch: int = 64
    beam: int = 20
    top_k: int = 10
    history_items: int = 10  # prompt ~ history_items * code_len tokens, varied per user
    hidden: int = 64
    layers: int = 2
    repeats: int = 5
    threads: int = 1  # users/s per thread, comparable across machines; 0 = torch default
    seed: int = 0


def random_ids(cfg: SpeedConfig, rng: np.random.Generator) -> np.ndarray:
    """Distinct random IDs; token j comes from codebook j (as residual quantisation gives)."""
    seen: set[tuple[int, ...]] = set()
    while len(seen) < cfg.n_items:
        codes = rng.integers(0, cfg.codebook_size, size=(cfg.n_items, cfg.code_len))
        seen.update(map(tuple, codes.tolist()))
    codes = np.array(sorted(seen)[: cfg.n_items])
    rng.shuffle(codes)
    offsets = cfg.base_vocab + cfg.codebook_size * np.arange(cfg.code_len)
    return codes + offsets[None, :]


def build(cfg: SpeedConfig) -> tuple[LlamaForCausalLM, PrefixTrie, torch.Tensor, torch.Tensor]:
    """Model, trie and one batch of left-padded prompts."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vocab = cfg.base_vocab + cfg.code_len * cfg.codebook_size
    ids = random_ids(cfg, rng)
    trie = PrefixTrie.from_sequences(ids.tolist(), list(range(cfg.n_items)), vocab)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=cfg.hidden,
            intermediate_size=cfg.hidden * 2,
            num_hidden_layers=cfg.layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
        )
    ).eval()
    prompts = []
    for _ in range(cfg.batch):
        n = int(rng.integers(max(1, cfg.history_items // 2), cfg.history_items + 1))
        hist = ids[rng.integers(0, cfg.n_items, size=n)].reshape(-1).tolist()
        prompts.append([1, 2, 3] + hist + [4])
    input_ids, mask = left_pad(prompts)
    return model, trie, input_ids, mask


def benchmark_decoding(cfg: SpeedConfig) -> dict[str, float]:
    """users/s for constrained and unconstrained beam search, and their time ratio.

    The two modes alternate run by run and each keeps its best time, so a load spike from
    other processes does not land on one mode only.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, trie, input_ids, mask = build(cfg)
    modes = {
        name: BeamConfig(beam_width=cfg.beam, top_k=cfg.top_k, constrained=constrained)
        for name, constrained in (("unconstrained", False), ("constrained", True))
    }
    best = {name: float("inf") for name in modes}
    for bcfg in modes.values():  # warm-up
        beam_search(model, input_ids, mask, trie, bcfg)
    for _ in range(cfg.repeats):
        for name, bcfg in modes.items():
            t0 = time.perf_counter()
            beam_search(model, input_ids, mask, trie, bcfg)
            best[name] = min(best[name], time.perf_counter() - t0)
    res = {f"{name}_users_per_s": cfg.batch / sec for name, sec in best.items()}
    res["constrained_over_unconstrained_time"] = best["constrained"] / best["unconstrained"]
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SpeedConfig()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(value), default=value)
    cfg = SpeedConfig(**vars(parser.parse_args()))
    res = benchmark_decoding(cfg)
    print(
        f"items={cfg.n_items} vocab={cfg.base_vocab + cfg.code_len * cfg.codebook_size} batch={cfg.batch} "
        f"beam={cfg.beam} hidden={cfg.hidden} layers={cfg.layers} threads={torch.get_num_threads()}"
    )
    print(f"unconstrained: {res['unconstrained_users_per_s']:.1f} users/s")
    print(f"constrained:   {res['constrained_users_per_s']:.1f} users/s")
    ratio = res["constrained_over_unconstrained_time"]
    print(f"time ratio constrained/unconstrained: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
