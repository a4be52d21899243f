"""Look into finished runs: paired comparisons, what systems recommend, and the user-ID leak check.

  paired        is A's lead over B beyond noise? Reads the per-user figures every run writes
                (`test_per_user.parquet` in a benchmark system folder, a jobs/train_ttds.py output
                folder or a baseline folder; `<split>_per_user.parquet` from jobs/evaluate.py): mean
                difference, its standard error, z, p and a bootstrap 95% interval over users. Several
                folders to --a and/or --b (the runs, i.e. seeds, of one recipe) compare recipes: each
                recipe's figure is the mean over its runs and the interval resamples runs as well as
                users (`ttds.bench.paired`).
  diagnostics   what each run recommends: seen items in the top 10, popularity bias, catalogue
                coverage, hits by item popularity and by history length (`ttds.bench.diagnostics`).
  user-id-leak  does a model trained with user IDs in its prompts read the next item off the ID? Ranks
                sampled users' last training item and validation item with their own ID and with
                another user's (`ttds.bench.user_id_leak`).

    python jobs/analyze.py paired --a runs/benchmark/X/systems/ttds --b runs/benchmark/Y/systems/sasrec
    python jobs/analyze.py paired --a runs/b-seed0/systems/ttds-ihe runs/b-seed1/systems/ttds-ihe \\
        --b runs/b-seed0/systems/sasrec runs/b-seed1/systems/sasrec --names TTDS SASRec
    python jobs/analyze.py diagnostics --data runs/data/Instruments runs/benchmark/X/systems/ttds runs/benchmark/X/systems/sasrec
    python jobs/analyze.py user-id-leak --model runs/benchmark/X/systems/ttds-uid/model --users 2000

Every subcommand prints its figures and writes them as JSON with --out. Exit 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ttds.bench.diagnostics import diagnose_folders
from ttds.bench.paired import compare_folders
from ttds.bench.report import diagnostics_markdown
from ttds.data.rejects import DataError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    pa = sub.add_parser("paired", help="paired comparison of two systems, or of two recipes over their runs")
    pa.add_argument("--a", required=True, nargs="+", help="per-user parquet file, or a folder holding test_per_user.parquet; "
                                                           "several = the runs (seeds) of one recipe")
    pa.add_argument("--b", required=True, nargs="+", help="the same for the system (or recipe) A is compared with")
    pa.add_argument("--metric", default="NDCG@10", choices=["HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"])
    pa.add_argument("--names", nargs=2, default=["A", "B"], metavar=("NAME_A", "NAME_B"), help="labels in the sentence")
    pa.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")

    di = sub.add_parser("diagnostics", help="seen items, popularity bias and coverage of runs' top 10")
    di.add_argument("--data", required=True, help="the prepared corpus the runs were scored on")
    di.add_argument("--split", default="test", choices=["test", "valid"])
    di.add_argument("runs", nargs="+", help="per-user parquet files, or folders holding test_per_user.parquet")

    le = sub.add_parser("user-id-leak", help="does a model decode next items from the user's semantic ID?")
    le.add_argument("--model", required=True, help="a trained model folder (with a user ID table)")
    le.add_argument("--users", type=int, default=2000, help="sampled users per case")
    le.add_argument("--seed", type=int, default=0)
    le.add_argument("--beam", type=int, default=20)
    le.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")

    for s in (pa, di, le):
        s.add_argument("--out", help="also write the figures as JSON here")
    return p


def _user_id_leak(args) -> dict:
    import torch

    from ttds.bench.user_id_leak import leak_table, user_id_leak  # loads the model stack: only for this subcommand

    if args.threads:
        torch.set_num_threads(args.threads)
    res = user_id_leak(args.model, args.users, args.seed, args.beam)
    print(f"prompts carry the user ID: {res['prompts_carry_user_id']}; {res['users']} users per case")
    print(leak_table(res))
    return res


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "paired":
            figures, sentence = compare_folders(args.a, args.b, args.metric, args.boot, tuple(args.names))
            print(sentence)
            print(json.dumps(figures, indent=2))
        elif args.command == "diagnostics":
            figures = diagnose_folders(args.data, args.runs, args.split)
            print("\n".join(diagnostics_markdown(figures)).strip())
        else:
            figures = _user_id_leak(args)
    except (FileNotFoundError, ValueError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
