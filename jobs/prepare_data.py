"""Prepare a corpus: read a source, validate, k-core, leave-one-out split, write Parquet.

Examples:
  python jobs/prepare_data.py --source synthetic --out runs/data/synthetic
  python jobs/prepare_data.py --source lcrec --path ../shared/data/Instruments
  python jobs/prepare_data.py --source amazon --path Musical_Instruments.json.gz \
      --meta meta_Musical_Instruments.json.gz --kcore 5
  python jobs/prepare_data.py --source recbole --path data/ml-1m --name ml-1m

Bad records are counted per kind and written with file and line to <out>/rejects.jsonl;
the job exits non-zero only when nothing usable is left or --max-reject-rate is exceeded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


from ttds.data.prepare import PrepareOptions, prepare_corpus  # noqa: E402
from ttds.data.rejects import DataError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=["lcrec", "amazon", "recbole", "synthetic"])
    p.add_argument("--path", help="lcrec/recbole: the folder; amazon: the reviews .json(.gz) file")
    p.add_argument("--meta", help="amazon: the meta_<Category>.json(.gz) file (items without it are unknown)")
    p.add_argument("--name", help="dataset name (lcrec/recbole: the file stem; default: inferred)")
    p.add_argument("--out", help="output folder (default: runs/data/<name>)")
    p.add_argument("--kcore", type=int, default=None, help="k-core filter (default: 5 for amazon, else 0 = off)")
    p.add_argument("--max-reject-rate", type=float, default=0.2, help="fail when more than this share is dropped")
    p.add_argument("--no-dedupe", action="store_true", help="keep repeated (user, item) events")
    p.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        raw = read_source(args, p)
        out = Path(args.out or f"runs/data/{raw.name}")
        kcore = args.kcore if args.kcore is not None else (5 if args.source == "amazon" else 0)
        manifest = prepare_corpus(raw, out, PrepareOptions(kcore=kcore, dedupe=not args.no_dedupe, max_reject_rate=args.max_reject_rate))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(manifest["counts"], indent=2))
    print(raw.rejects.summary())
    print(f"prepared corpus written to {out}")
    return 0


def read_source(args: argparse.Namespace, parser: argparse.ArgumentParser):
    if args.source == "synthetic":
        from ttds.data.synthetic import SyntheticConfig, generate

        return generate(SyntheticConfig(seed=args.seed))[0]
    if not args.path:
        parser.error(f"--path is required for --source {args.source}")
    from ttds.data.readers import read_corpus

    kwargs = {}
    if args.source == "amazon" and args.meta:
        kwargs["meta"] = args.meta
    if args.name:
        kwargs["name"] = args.name
    return read_corpus(args.source, args.path, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
