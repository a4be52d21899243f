"""Paired comparison of two systems' test results, user by user.

Reads the per-user figures every run writes (`test_per_user.parquet` in a benchmark system
folder, a jobs/train_ttds.py output folder or a baseline folder; `<split>_per_user.parquet`
from jobs/evaluate.py) and says whether A's lead over B is beyond noise: mean difference, its
standard error, z, p and a bootstrap 95% interval over users. Use it to compare runs made
apart (two benchmark folders, a change and its control).

Give several folders to --a and/or --b (the runs of one recipe: seeds) to compare recipes: each
recipe's figure is the mean over its runs, and the interval resamples runs as well as users, so
the spread between training runs is inside it (`ttds.bench.paired.recipe_comparison`).

    python benchmarks/paired.py --a runs/benchmark/X/systems/ttds --b runs/benchmark/Y/systems/sasrec
    python benchmarks/paired.py --a runs/benchmark/X-seed0/systems/ttds runs/benchmark/X-seed1/systems/ttds \
        --b runs/benchmark/Y-seed0/systems/sasrec runs/benchmark/Y-seed1/systems/sasrec --names TTDS SASRec
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, nargs="+", help="per-user parquet file, or a folder holding test_per_user.parquet; "
                                                          "several = the runs (seeds) of one recipe")
    p.add_argument("--b", required=True, nargs="+", help="the same for the system (or recipe) A is compared with")
    p.add_argument("--metric", default="NDCG@10", help="HR@1, HR@5, HR@10, NDCG@5 or NDCG@10")
    p.add_argument("--names", nargs=2, default=["A", "B"], metavar=("NAME_A", "NAME_B"), help="labels in the sentence")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args(argv)

    from ttds.bench.paired import paired_comparison, paired_sentence, recipe_comparison, recipe_sentence
    from ttds.eval.per_user import read_per_user

    try:
        runs_a, runs_b = [read_per_user(x) for x in args.a], [read_per_user(x) for x in args.b]
        if len(runs_a) == len(runs_b) == 1:
            c = paired_comparison(runs_a[0], runs_b[0], args.metric, args.boot)
            sentence = paired_sentence(*args.names, c)
        else:
            c = recipe_comparison(runs_a, runs_b, args.metric, args.boot)
            sentence = recipe_sentence(*args.names, c)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(sentence)
    print(json.dumps(c, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(c, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
