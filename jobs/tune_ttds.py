"""Ray Tune sweep of the TTDS recommender over ID length, codebook size, loss weights and more.

Each trial is a train_ttds run (tokenizer warm-up → Ray Train) that stops at validation: its
per-epoch validation NDCG@10 reaches Tune while it trains, so ASHA can stop weak trials early, and
no trial reads the test split (only the chosen best.yaml is tested, when it is trained).
Failed trials are tabled with their error; the sweep goes on.

The sweep file (default configs/tune_default.yaml) holds the Tune settings, the fixed config
(`base`), trial-only budget knobs (`sweep_only`) and the search space. Examples:
  python jobs/tune_ttds.py                                   # the default sweep, synthetic corpus
  python jobs/tune_ttds.py --num-samples 16 --search optuna  # needs `pip install optuna`
  python jobs/tune_ttds.py --grid index.levels=3,4,5 --grid loss.alpha=0.05,0.5 --num-samples 1
  python jobs/tune_ttds.py --data.corpus=../shared/data/Instruments --optim.epochs=4
  python jobs/tune_ttds.py --resume --output_dir runs/tune_ttds/20260101-120000
`--section.key=value` pins a config key for every trial (and drops it from the space).

Outputs (runs/tune_ttds/<timestamp>/): trials.csv / trials.md (the trial table), best.yaml
(for `python jobs/train_ttds.py --config best.yaml`), best_model/, ndcg_vs_params.png,
summary.json, trials/<id>/ (each trial's train_ttds folder), tune/ (Ray Tune's experiment).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from ttds.config import ConfigError  # noqa: E402
from ttds.data.rejects import DataError  # noqa: E402
from ttds.tune.space import SCHEDULERS, SEARCHERS, count_trials, load_sweep  # noqa: E402

DEFAULT_SWEEP = ROOT / "configs" / "tune_default.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_SWEEP), help="sweep YAML (tune / base / sweep_only / space)")
    p.add_argument("--search", choices=SEARCHERS, help="search algorithm (default: the file's tune.search)")
    p.add_argument("--num-samples", type=int, help="samples of the space; grid parameters multiply it")
    p.add_argument("--max-concurrent", type=int, help="trials at once (0 = as many as fit the CPUs)")
    p.add_argument("--ray-cpus", type=int, help="logical CPUs of a local Ray (0 = cores; 3 on 2 cores runs two one-thread trials at once)")
    p.add_argument("--scheduler", choices=SCHEDULERS, help="asha stops weak trials early; fifo runs all to the end")
    p.add_argument("--grace-period", type=int, help="epochs before ASHA may stop a trial")
    p.add_argument("--seed", type=int, help="searcher seed")
    p.add_argument("--output_dir", help="sweep folder (default runs/tune_ttds/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --output_dir after an interruption (errored trials are retried)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=v1,v2", help="sweep KEY over these values (replaces its spec)")
    p.add_argument("--print-config", action="store_true", help="print the resolved sweep and the number of trials, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    bad = [r for r in rest if not (r.startswith("--") and "=" in r)]
    if bad:
        parser.error(f"unrecognised arguments {bad}; config pins look like --section.key=value")
    if args.resume and not args.output_dir:
        parser.error("--resume needs --output_dir (the sweep folder to continue)")
    settings = {"search": args.search, "num_samples": args.num_samples, "max_concurrent": args.max_concurrent, "ray_cpus": args.ray_cpus,
                "scheduler": args.scheduler, "grace_period": args.grace_period, "seed": args.seed, "output_dir": args.output_dir}
    try:
        spec = load_sweep(args.config, pins=rest, grids=args.grid, tune_overrides=settings)
    except (ConfigError, FileNotFoundError) as e:
        parser.error(str(e))
    if args.print_config:
        import yaml

        print(yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
        print(f"# {count_trials(spec)} trial(s)")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from ttds.tune.sweep import run_sweep

    try:
        outcome = run_sweep(spec, resume=args.resume)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((outcome.out_dir / "trials.md").read_text())
    print(json.dumps({"best_trial": outcome.best["trial_id"] if outcome.best else None,
                      "best_valid_NDCG@10": outcome.best["best_valid_NDCG@10"] if outcome.best else None,
                      "wall_s": round(outcome.wall_s, 1), "files": outcome.files}, indent=2))
    if outcome.best is None:
        print("no trial produced a validation score; see the error column", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
