"""Train the TTDS generative recommender, evaluate it on the test split, save the best model.

Stages: twin-tower tokenizer warm-up (item and user semantic IDs) → Ray Train + DeepSpeed
training of the LLM over instruction prompts (next item, user prediction, comment and
ID/text alignment), DM-VAE losses, IDs re-assigned every `index.reindex_every` epochs →
full-ranking test evaluation by trie-constrained beam search on Ray actors.

With no arguments it trains on the embedded synthetic corpus. Examples:
  python jobs/train_ttds.py
  python jobs/train_ttds.py --data.corpus=../shared/data/Instruments --train.num_workers=2
  python jobs/train_ttds.py --ablation ttss          # static index (also: stds, ttds-dm, ttds-ho, ttds-uid, m3, m5, tiger)
  python jobs/train_ttds.py --backbone.name=smollm2-135m --backbone.finetune=lora
  ray job submit --working-dir . -- python jobs/train_ttds.py --optim.epochs=5
Re-running with the same --output_dir resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from ttds.config import describe_fields, job_argparser, parse_job_args  # noqa: E402
from ttds.configs import ABLATIONS, TTDSJobConfig  # noqa: E402
from ttds.data.rejects import DataError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = job_argparser(__doc__, "config keys (override with --key=value):\n" + describe_fields(TTDSJobConfig))
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), help="apply one of the paper's ablation configs, or a platform variant (ttds-ih: item head; ttds-ihe: item head + item input vectors)")
    args, _ = parser.parse_known_args(argv)
    if args.ablation:
        argv = ABLATIONS[args.ablation] + [a for a in argv if not a.startswith("--ablation")]
        argv = [a for a in argv if a != args.ablation]
    _, cfg = parse_job_args(parser, TTDSJobConfig, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from ttds.train.ttds_job import train_ttds

    try:
        m = train_ttds(cfg)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = ["HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"]
    print(json.dumps({"TTDS test": {k: round(m["test"][k], 4) for k in keys}, "Popularity test": {k: round(m["popularity_test"][k], 4) for k in keys},
                      "best_epoch": m["best_epoch"], "wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"]}, indent=2))
    print(f"model, ID tables and metrics written to {m['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
