"""Speed check: trie-constrained vs unconstrained beam search of the same width.

Why: the constraint must be cheap next to the model, or full-catalogue evaluation gets slow.
Target: constrained decoding costs at most 20% more than unconstrained.

Setup: a tiny random Llama, ~10k random 4-token item IDs (token j drawn from codebook j,
4 codebooks x 256 on top of a small base vocabulary: ~1100 tokens), left-padded prompts of
varied length that look like short item histories. Prints users/s for both and the ratio.
The measurement lives in `ttds.bench.perf` (the benchmark harness reports the same figure
with `jobs/benchmark.py --perf`, plus the same ratio on a trained model).

    python benchmarks/decode_speed.py [--n-items 10000 --batch 64 --beam 20 --hidden 64 ...]
"""

from __future__ import annotations

import argparse

import torch

from ttds.bench.perf import SpeedConfig, benchmark_decoding, build_reference, random_ids  # noqa: F401  (re-exported)

build = build_reference  # the name this script used before the move


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SpeedConfig()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(value), default=value)
    cfg = SpeedConfig(**vars(parser.parse_args()))
    res = benchmark_decoding(cfg)
    print(
        f"items={cfg.n_items} vocab={cfg.base_vocab + cfg.code_len * cfg.codebook_size} batch={cfg.batch} "
        f"beam={cfg.beam} hidden={cfg.hidden} layers={cfg.layers} threads={cfg.threads or torch.get_num_threads()}"
    )
    print(f"unconstrained: {res['unconstrained_users_per_s']:.1f} users/s")
    print(f"constrained:   {res['constrained_users_per_s']:.1f} users/s")
    ratio = res["constrained_over_unconstrained_time"]
    print(f"time ratio constrained/unconstrained: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
