"""Add new items to a trained TTDS model without retraining: a new model version folder.

Each new item gets a semantic ID from its text (the model's own text encoder, then its item
tower; collisions get a suffix as in training), and the new folder serves it at once
(`serve_apps/config.yaml`: point `model_dir` at it and redeploy; the rollout swaps versions
without dropping requests). The old folder is left untouched. Only models whose item X is text
(index.features.source=text) can place unseen items; others are refused. See docs/new_items.md.

--items: one JSON object per line, the Amazon metadata format:
  {"asin": "B00NEW1", "title": "...", "description": "...", "brand": "...", "category": ["..."]}
Bad records (not JSON, no asin, no text at all) are listed with file and line in
<out>/rejects.jsonl; items whose asin the model already knows refuse the whole run.

Examples:
  python jobs/add_items.py --model runs/train_ttds/<ts>/model --items new.jsonl
  python jobs/add_items.py --model runs/train_ttds/<ts>/model --items new.jsonl --out runs/models/catalogue-2
Exit 0 on success, 2 on bad input (the message says what to fix).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model folder (jobs/train_ttds.py's <run>/model, or an earlier add_items output)")
    p.add_argument("--items", required=True, help="new items, one JSON object per line (see above)")
    p.add_argument("--out", default="", help="the new version's folder (default: <model>-v<version> beside the model)")
    p.add_argument("--max-reject-rate", type=float, default=0.5, help="refuse the run when more than this share of records is bad")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from ttds.data.rejects import DataError
    from ttds.serve.catalogue import CatalogueError, ExtendConfig, extend_model

    try:
        res = extend_model(ExtendConfig(model_dir=args.model, items_path=args.items, out_dir=args.out, max_reject_rate=args.max_reject_rate))
    except (CatalogueError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(res.out_dir), "version": res.version, "added": len(res.added), "item_ids": [res.added[0], res.added[-1]],
                      "encoder": res.encoder, "encoder_relative_error": res.encoder_error, "rejected_records": res.rejects,
                      "trained_items_that_gained_a_suffix": res.old_ids_changed}, indent=2))
    if res.rejects:
        print(f"{res.rejects} bad record(s): see {res.out_dir / 'rejects.jsonl'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
