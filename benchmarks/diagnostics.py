"""What systems recommend: seen items in the top 10, popularity bias, catalogue coverage.

Reads the per-user files runs write (`test_per_user.parquet`, with each user's ranked list) and
prints one row per run (`ttds.bench.diagnostics`). Use it to see why two systems differ, e.g.
whether one spends its top slots on items the user already has.

    python benchmarks/diagnostics.py --data runs/data/Instruments runs/benchmark/X/systems/ttds runs/benchmark/X/systems/sasrec
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the prepared corpus the runs were scored on")
    p.add_argument("--split", default="test", choices=["test", "valid"])
    p.add_argument("runs", nargs="+", help="per-user parquet files, or folders holding test_per_user.parquet")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args(argv)

    from ttds.bench.diagnostics import ranking_diagnostics
    from ttds.bench.report import diagnostics_markdown
    from ttds.data.corpus import Corpus
    from ttds.data.rejects import DataError
    from ttds.eval.per_user import read_per_user

    try:
        corpus = Corpus.open(args.data)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    figures = {}
    for run in args.runs:
        try:
            figures[run] = ranking_diagnostics(read_per_user(run), corpus, args.split)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {run}: {e}", file=sys.stderr)
            return 2
    print("\n".join(diagnostics_markdown(figures)).strip())
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
