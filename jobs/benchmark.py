"""Benchmark recommenders side by side on one corpus: the paper's table, measured here.

For each system: train it under the same budget with the platform's own jobs (Ray Train),
select the best epoch on VALIDATION NDCG@10 (early stopping), score the TEST split once with
the same full-ranking code (every item ranked), and record wall time, peak memory and the
exact config. Writes to --out:
  results.md    HR@1/5/10, NDCG@5/10 per system (best per column in bold), the paper's
                Instruments rows as a separate, labelled reference block, and the --perf figures
  results.json  {"dataset", "systems": {name: {HR@1..NDCG@10, wall_s, peak_rss_mb, config}}, "perf",
                "paired" (each TTDS-family system vs the strongest baseline, user by user),
                "diagnostics" (seen items in the top 10, popularity bias, coverage per system)}
  results.png   bar chart;  details.json  validation figures, epochs, memory per process, histories
  systems/<name>/  each job's own output folder (model, checkpoints, metrics)

Systems (comma-separated): every recipe of configs/recipes/ (listed at the end; a new YAML file
there is a new system, see ttds.config.recipes), plus
  <ttds-recipe>-retrieval            e.g. ttds-retrieval: the same trained model ranked by the
                                     generative-retrieval fast path (id_head + faiss, one forward);
                                     its base is trained with --loss.retrieval_weight=--retrieval-weight
  <ttds-recipe>@<index.kind>         e.g. ttds@moc: that recipe with another ID scheme

Budget: --budget-epochs caps every trained system's epochs (TTDS optim.epochs, SASRec/GRU4Rec
epochs); --budget-minutes caps each one's training loop (tokenizer warm-up and test evaluation
run outside it and are included in wall_s; a resumed run counts the loop time it spent before the
stop). Inside the budget each stops early on validation.

--perf adds, each as a ratio measured in one run: training examples/s with 1 and 2 Ray Train
workers (TTDS, and SASRec when run); decoding users/s of trie-constrained vs unconstrained beam
search of the same width and of the retrieval fast path vs beam (reference setting + the
trained model); full test-set evaluation wall time and peak RSS per worker.

Examples:
  python jobs/benchmark.py --data runs/data/Instruments --systems ttds,tiger,sasrec,gru4rec,popularity \\
      --budget-epochs 20 --out runs/benchmark/Instruments --perf
  python jobs/benchmark.py --data synthetic --systems popularity,sasrec,ttds,ttds-retrieval --budget-epochs 2 --out /tmp/b
  python jobs/benchmark.py ... --ttds-config my_ttds.yaml --set ttds-family:optim.lr=5e-4 --set sasrec:hidden=128

--cold-items F (e.g. 0.1) holds a fraction of the items out of every training input (sequences, task rows,
tokenizer features) and puts them back as candidates at test time: cold_items.md / results.json "cold_items" give
each system's HR/NDCG@10 on test users whose target is cold and on the rest (ttds.bench.cold says how each
system ranks cold items). Example:
  python jobs/benchmark.py --data runs/data/Scientific --systems popularity,content-knn,sasrec,ttds --cold-items 0.1 --exclude-seen --out /tmp/cold

--exclude-seen keeps each user's history items out of every system's rankings (validation and test;
RecBole's full-sort protocol). The default ranks every item, as the paper.

The confirmatory protocol (docs/benchmark.md; ttds.bench.confirm): --seeds N trains every system with training
seeds 0..N-1 (seeds/seed<k>/, each (system, seed) a resumable unit whose test split is read once, logged in
test_reads.jsonl); --tune-trials K first gives every trained system (SASRec, GRU4Rec, the TTDS family alike) a Ray
Tune search of K trials on VALIDATION, frozen as recipes/<system>.yaml and used by every seed and every later run of
that folder. results.json then holds the per-seed figures, each system's mean with its 95% interval over seeds and
users, and the best TTDS recipe against the strongest baseline (both chosen on validation) with its paired interval;
results.md and quality_per_compute.png say the same. Example (then add TTDS later by re-running with a longer
--systems on the same --out: the finished units and frozen recipes are reused):
  python jobs/benchmark.py --data runs/data/Scientific --systems popularity,gru4rec,sasrec --seeds 3 --tune-trials 4 \\
      --exclude-seen --budget-epochs 40 --out runs/confirm/Scientific
--also-all-items then adds the paper's protocol (every item ranked) from the same models: each finished (system, seed)
is scored on test once more, in runs/confirm/Scientific/all-items/ (nothing retrains).
--ledger DIR copies the small files that hold every decision and test read (recipes, records, per-user figures) to DIR
as the run goes, and restores them into a fresh --out first: a campaign survives losing its machine (ttds.bench.ledger).

Re-running with the same --out reuses finished systems whose config is unchanged and resumes an
interrupted one (--fresh starts over). A system that fails is reported and the others still run.
Exit 0 on success, 1 when a system failed (the table holds the others), 2 on bad input.

The console shows one progress bar per stage of each system, one line per system and the final
table; Ray's own output goes to run.log in --out (--verbose: to the console, as Ray prints it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path



def parser() -> argparse.ArgumentParser:
    from ttds.config import recipes_help

    p = argparse.ArgumentParser(description=__doc__, epilog=recipes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared corpus folder (jobs/prepare_data.py), a raw LC-Rec folder, or 'synthetic'")
    p.add_argument("--systems", default="popularity,sasrec,gru4rec,tiger,ttds", help="comma-separated systems: recipe names (below), "
                   "<ttds-recipe>-retrieval, <ttds-recipe>@<index.kind>")
    p.add_argument("--budget-epochs", type=int, default=0, help="max epochs of every trained system (0 = each system's default)")
    p.add_argument("--budget-minutes", type=float, default=0.0, help="training-loop minutes per system (0 = no limit)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--perf", action="store_true", help="also measure the speed and memory ratios")
    p.add_argument("--ttds-config", default="", help="YAML config (jobs/train_ttds.py format) for every TTDS-family system")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SYSTEM:KEY=VALUE",
                   help="config override for one system, a glob of names, 'ttds-family' or 'baselines' "
                        "(TTDS keys as in train_ttds.py: optim.lr=5e-4; baseline keys: hidden=128); repeatable")
    p.add_argument("--retrieval-weight", type=float, default=0.5, help="loss.retrieval_weight of the base of a *-retrieval system")
    p.add_argument("--workers", type=int, default=0, help="Ray Train workers per trained system (0 = each job's default: 1)")
    p.add_argument("--cpus-per-worker", type=float, default=0.5, help="CPUs reserved per Ray Train worker")
    p.add_argument("--gpu", choices=("auto", "on", "off"), default="auto",
                   help="train and evaluate on the GPU: one GPU per Ray Train worker, test-set ranking actors sharing "
                        "it (auto = when torch sees CUDA)")
    p.add_argument("--verbose", action="store_true", help="Ray's own output on the console too (default: in run.log in --out)")
    p.add_argument("--fresh", action="store_true", help="retrain every system even if --out holds its result")
    p.add_argument("--exclude-seen", action="store_true",
                   help="every system keeps each user's history items out of its rankings, in validation and test (RecBole's "
                        "full-sort protocol; default: the paper's, every item ranked)")
    p.add_argument("--cold-items", type=float, default=0.0, metavar="F",
                   help="hold a fraction F of the items out of every training input and test them as candidates; reports HR/NDCG@10 "
                        "on cold-target vs warm-target test users in cold_items.md (ttds.data.cold_items; add content-knn to --systems)")
    p.add_argument("--cold-reference", default="", metavar="DIR",
                   help="with --cold-items: the --out folder of a run of the same systems without --cold-items; each TTDS system's "
                        "warm-target users (its recipe's ranker) are compared with that system's run there (paired NDCG@10, in cold_items.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus (--data synthetic) and of the --cold-items draw")
    p.add_argument("--train-seed", type=int, default=None,
                   help="training seed of every trained system (TTDS optim.seed, a baseline's seed; a --set still wins). "
                        "Default: each system's own (0). Give each seed its own --out, then compare the seeds of two "
                        "recipes with jobs/analyze.py paired --a <folders> --b <folders>")
    p.add_argument("--seeds", type=int, default=0, metavar="N",
                   help="the confirmatory protocol: train every system with seeds 0..N-1 (seeds/seed<k>/ in --out), report the mean and "
                        "its interval over seeds and users and the paired difference (not with --train-seed)")
    p.add_argument("--tune-trials", type=int, default=0, metavar="K",
                   help="before the seeds, a Ray Tune search of K trials on validation per trained system without a frozen recipe "
                        "in --out/recipes/ (baselines: dropout, lr, width, weight average; TTDS: configs/tune_default.yaml's space)")
    p.add_argument("--also-all-items", action="store_true",
                   help="with --seeds and --exclude-seen: also score every finished (system, seed) on test with every item ranked "
                        "(the paper's protocol) from the same trained model, no retraining; --out/all-items/ holds that protocol's "
                        "results (recipes and epochs chosen on the seen-excluded validation)")
    p.add_argument("--ledger", default="", metavar="DIR",
                   help="with --seeds: keep the run's ledger in DIR (a git checkout, a mounted bucket): recipes, sweep tables, "
                        "each finished unit's test record and per-user figures, the test reads; copied as the run goes and "
                        "restored into a fresh --out first, so the same command resumes on another machine without training or "
                        "reading test again what has finished (same --out and --data paths); jobs/report.py renders from it")
    p.add_argument("--perf-users", type=int, default=256, help="--perf: test users timed per decoding mode")
    p.add_argument("--perf-rows", type=int, default=2048, help="--perf: task rows of each short throughput run")
    p.add_argument("--perf-repeats", type=int, default=3, help="--perf: timed repeats per decoding mode (best kept)")
    p.add_argument("--perf-train-repeats", type=int, default=2, help="--perf: alternating 1-/2-worker throughput runs per count (best kept)")
    p.add_argument("--perf-reference-items", type=int, default=10_000, help="--perf: items of the reference decoding setting (0 = skip)")
    return p


def _use_gpu(choice: str) -> bool:
    """--gpu through the platform's one device choice; RuntimeError for `on` without CUDA."""
    from ttds.runtime import select_device

    return select_device({"on": "cuda", "off": "cpu"}.get(choice, "auto")).is_cuda


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ttds.bench import resolve_systems
    from ttds.config import ConfigError

    systems = [s for s in args.systems.split(",") if s.strip()]
    try:
        resolve_systems(systems)  # fail on a typo (or a broken recipe file) before any work
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        use_gpu = _use_gpu(args.gpu)
    except RuntimeError as e:
        print(f"error: --gpu on: {e}", file=sys.stderr)
        return 2
    try:
        cfg = _bench_config(args, systems, use_gpu)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _run(args, cfg)


def _bench_config(args: argparse.Namespace, systems: list[str], use_gpu: bool):
    from ttds.config import BenchConfig

    return BenchConfig(
        data=args.data, systems=systems, out=args.out, budget_epochs=args.budget_epochs, budget_minutes=args.budget_minutes,
        perf=args.perf, ttds_config=args.ttds_config, sets=args.sets, retrieval_weight=args.retrieval_weight,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, fresh=args.fresh, seed=args.seed, train_seed=args.train_seed, exclude_seen=args.exclude_seen,
        perf_users=args.perf_users, perf_rows=args.perf_rows, perf_repeats=args.perf_repeats, perf_train_repeats=args.perf_train_repeats,
        perf_reference_items=args.perf_reference_items, use_gpu=use_gpu, cold_items=args.cold_items, cold_reference=args.cold_reference,
        seeds=args.seeds, tune_trials=args.tune_trials, also_all_items=args.also_all_items, ledger=args.ledger,
    )


def _run(args: argparse.Namespace, cfg) -> int:
    from ttds.bench import run_benchmark
    from ttds.config import ConfigError
    from ttds.data.rejects import DataError
    from ttds.console import LOG_FILE, job_console, table

    try:
        with job_console(args.out, verbose=args.verbose, epoch_lines=False) as console:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
            try:
                res = run_benchmark(cfg)
            finally:
                _shutdown_ray()  # inside: Ray's goodbye messages go to the log too
            keys = ["HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"]
            confirm = res["results"].get("confirm")
            what = f", mean over {len(res['results'].get('seeds') or {})} seed(s)" if confirm else ""
            console.write(f"{res['results']['dataset']}: full-ranking test{what}\n" + table(res["results"]["systems"], keys))
            if confirm:
                console.write(confirm["statement"])
            console.write(f"results written to {res['paths']['md']} (+ results.json and charts); "
                          f"Ray's log: {Path(args.out) / LOG_FILE}")
            if "cold_md" in res["paths"]:
                console.write(open(res["paths"]["cold_md"]).read())
    except (DataError, ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C; a sweep that Ray Tune stopped on it says where it stood
        print(f"interrupted{': ' + str(e) if str(e) else ''}; the same command resumes (finished units are reused)", file=sys.stderr)
        return 130
    for name, why in res["failures"].items():
        print(f"error: system {name} failed: {why}", file=sys.stderr)
    return 1 if res["failures"] else 0


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
