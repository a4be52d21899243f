"""Evaluate a trained TTDS model folder on the full leave-one-out split (all items ranked).

Ranking is trie-constrained beam search, spread over Ray actors; metrics are averaged over
the next-item instruction templates, as in the paper. Writes eval.json and eval.md.

Examples:
  python jobs/evaluate.py --model runs/train_ttds/<ts>/model
  python jobs/evaluate.py --model ... --split valid --users 2000 --templates 1 --workers 2
  python jobs/evaluate.py --model ... --exclude-seen --popularity-prior 0.1
  python jobs/evaluate.py --model ... --rank-by item_head   (models trained with --loss.item_head_weight=1)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model folder written by jobs/train_ttds.py (<run>/model)")
    p.add_argument("--data", help="prepared corpus folder (default: the one the model was trained on)")
    p.add_argument("--split", default="test", choices=["test", "valid"])
    p.add_argument("--users", type=int, default=0, help="evaluate a seeded sample of this many users (0 = all)")
    p.add_argument("--templates", type=int, default=0, help="next-item templates to average (0 = all)")
    p.add_argument("--beam", type=int, default=20, help="beam width")
    p.add_argument("--workers", type=int, default=2, help="Ray actors ranking in parallel")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--exclude-seen", action="store_true", help="keep each user's history items out of its ranking (RecBole's full-sort "
                                                               "protocol; default: the model's eval.exclude_seen)")
    p.add_argument("--popularity-prior", type=float, default=0.0, metavar="G",
                   help="rank by log P(ID | prompt) - G log(1 + training count), applied inside the beam search: more "
                        "less-popular items at some cost in accuracy (0 = off; Instruments validation, G=.1: NDCG@10 .0883 -> .0881, "
                        "top-10 slots outside the 5%% most bought items 8.5%% -> 10.7%%)")
    p.add_argument("--rank-by", choices=["beam", "item_head"], help="beam: trie-constrained beam search over IDs; item_head: the item head's "
                   "logits, one forward (models trained with --loss.item_head_weight > 0; default: the model's eval.rank_by)")
    p.add_argument("--new-item-share", type=float, metavar="E",
                   help="beam search over a model with items added after training (jobs/add_items.py): the largest share of "
                        "each top 10 that new items sharing a result's ID prefix may take (ttds.rank.new_items; default: "
                        "eval.new_item_share, 0.1; 0 = plain beam search)")
    p.add_argument("--out", help="where to write eval.json / eval.md (default: the model folder)")
    args = p.parse_args(argv)

    from ttds.config import EvalConfig, migrate_model_meta
    from ttds.data.corpus import Corpus
    from ttds.data.rejects import DataError
    from ttds.eval.distributed import check_rank_by, evaluate_model_dir
    from ttds.llm.prompts import TEMPLATES
    from ttds.runtime import init_ray
    from ttds.train.ttds_job import results_table

    model_dir = Path(args.model)
    meta_path = model_dir / "ttds.json"
    if not meta_path.exists():
        print(f"error: {model_dir} is not a TTDS model folder (no ttds.json)", file=sys.stderr)
        return 2
    meta = migrate_model_meta(json.loads(meta_path.read_text()))  # an older folder: its added keys filled
    try:
        corpus = Corpus.open(args.data or meta["corpus_dir"])
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_templates = len(TEMPLATES["next_item"])
    templates = list(range(n_templates if args.templates == 0 else min(args.templates, n_templates)))
    rank_by = args.rank_by or meta["rank_by"]
    try:
        check_rank_by(rank_by, model_dir, args.popularity_prior)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    init_ray()  # after every check: a refused command starts nothing
    t0 = time.time()
    out = Path(args.out or model_dir)
    per_user = out / f"{args.split}_per_user.parquet"  # for paired comparisons (jobs/analyze.py paired)
    exclude = args.exclude_seen or bool(meta["exclude_seen"])
    res = evaluate_model_dir(str(model_dir), corpus, args.split, templates, args.beam, 10, args.users, args.workers, args.batch_size,
                             per_user_path=per_user, exclude_seen=exclude, popularity_prior=args.popularity_prior, rank_by=rank_by,
                             new_item_share=EvalConfig().new_item_share if args.new_item_share is None else args.new_item_share)
    res["wall_s"] = round(time.time() - t0, 1)
    res["users_per_s"] = round(res["users"] * len(templates) / res["wall_s"], 1)
    pop = res.pop("popularity")
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps({"ttds": res, "popularity": pop}, indent=2))
    (out / "eval.md").write_text(results_table(f"{corpus.name} ({args.split})", {"TTDS": res, "Popularity": pop}))
    print((out / "eval.md").read_text())
    print(f"{res['users']} users x {len(templates)} templates in {res['wall_s']} s; written to {out}/eval.json (per user: {per_user.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
