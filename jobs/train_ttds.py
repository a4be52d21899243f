"""Train the TTDS generative recommender, evaluate it on the test split, save the best model.

Stages: twin-tower tokenizer warm-up (item and user semantic IDs) → Ray Train + DeepSpeed
training of the LLM over instruction prompts (next item, user prediction, comment and
ID/text alignment), DM-VAE losses, IDs re-assigned every `index.reindex_every` epochs →
full-ranking test evaluation by trie-constrained beam search on Ray actors.

With no arguments it trains on the embedded synthetic corpus. Examples:
  python jobs/train_ttds.py
  python jobs/train_ttds.py --data.corpus=../shared/data/Instruments --train.num_workers=2
  python jobs/train_ttds.py --ablation ttss          # a recipe of configs/recipes/ (listed below)
  python jobs/train_ttds.py --ablation my_recipe.yaml  # a recipe file of your own
  python jobs/train_ttds.py --backbone.name=smollm2-135m --backbone.finetune=lora
  ray job submit --working-dir . -- python jobs/train_ttds.py --optim.epochs=5
  python jobs/train_ttds.py --data.corpus=/work/data/Instruments --ablation ttds-ihe --profile --profile-steps 200
      # where an epoch's time goes: a table of stages and tokens per task (no test evaluation)
Re-running with the same --output_dir resumes from its newest checkpoint.

The console shows one progress bar per stage (data, tokenizer, epochs, ranking), one line per
epoch and the final table; Ray's own output goes to run.log in the run folder (--verbose: to
the console, as Ray prints it).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path


from ttds.config import (
    ConfigError,
    TTDSJobConfig,
    check_config,
    describe_fields,
    job_argparser,
    load_recipe,
    parse_job_args,
    recipe_names,
    recipes_help,
)
from ttds.data.rejects import DataError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    epilog = (recipes_help("ttds") + "\n\nconfig keys (override with --key=value; reference: docs/configuration.md):\n"
              + describe_fields(TTDSJobConfig))
    parser = job_argparser(__doc__, epilog)
    parser.add_argument("--ablation", metavar="RECIPE",
                        help=f"a TTDS recipe: {', '.join(recipe_names('ttds'))} (configs/recipes/NAME.yaml), or a recipe "
                             "YAML file; its config sits between --config and the --key=value overrides")
    parser.add_argument("--verbose", action="store_true", help="Ray's own output on the console too (default: in run.log in the run folder)")
    parser.add_argument("--profile", action="store_true",
                        help="time where each epoch goes (Ray Data, prompts, tokens per task, forward/backward by term, DeepSpeed, re-index, "
                             "validation, checkpoints), print the table and stop before the test evaluation (ttds.train.profile)")
    parser.add_argument("--profile-steps", type=int, default=0, metavar="N",
                        help="with --profile: time the first N steps of each epoch and scale them to the epoch (0 = whole epochs)")
    parser.add_argument("--profile-epochs", type=int, default=2, metavar="E",
                        help="with --profile: epochs to run (optim.epochs; 2 so a re-index and a checkpoint are timed)")
    args, _ = parser.parse_known_args(argv)
    layers = []
    if args.ablation:
        try:
            recipe = load_recipe(args.ablation)
        except ConfigError as e:
            parser.error(str(e))
        if recipe.kind != "ttds":
            parser.error(f"--ablation {args.ablation}: a {recipe.kind} recipe is not a TTDS job (jobs/benchmark.py runs it)")
        layers = [recipe.config]
    _, cfg = parse_job_args(parser, TTDSJobConfig, argv, layers)
    if args.profile_steps < 0 or args.profile_epochs < 1:
        parser.error("--profile-steps must be >= 0 and --profile-epochs >= 1")
    if args.profile:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=args.profile_epochs))
    try:
        check_config(cfg)  # before any work (the run folder included)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ttds.console import job_console
    from ttds.train.tokenizer_job import default_out
    from ttds.train.ttds_job import console_summary, train_ttds

    out = Path(cfg.output_dir) if cfg.output_dir else default_out("train_ttds")
    cfg = dataclasses.replace(cfg, output_dir=str(out))
    try:
        with job_console(out, verbose=args.verbose) as console:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
            try:
                m = train_ttds(cfg, profile_steps=args.profile_steps if args.profile else -1)
            finally:
                _shutdown_ray()  # inside: Ray's goodbye messages go to the log too
            if args.profile:
                from ttds.train.profile import read_profile_table

                console.write(read_profile_table(out, args.ablation or "") + f"\n(run folder: {out})")
            else:
                console.write(console_summary(m))
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e} (Ray's log: {out / 'run.log'})", file=sys.stderr)
        return 2
    return 0


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
