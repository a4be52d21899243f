"""Train the twin-tower semantic token generator and write the semantic-ID tables.

Ray Train workers (DeepSpeed ZeRO, gloo on CPU) train the item and user RQ towers on X
streamed with Ray Data; the job writes tokenizer weights (safetensors), the ID tables
(Parquet + JSON) and metrics.json (collision rate, codebook usage per level, recon error).

Examples:
  python jobs/train_tokenizer.py                                    # synthetic corpus
  python jobs/train_tokenizer.py --data.corpus=../shared/data/Instruments --index.features.source=collaborative
  python jobs/train_tokenizer.py --data.corpus=../shared/data/Scientific --index.features.source=text \\
      --index.features.text_backbone=smollm2-135m --train.num_workers=2
  python jobs/train_tokenizer.py --index.kind=lsh        # ablation indexers: lsh | random | precomputed
  python jobs/train_tokenizer.py --index.kind=kway_masked --index.mask_ratio=0.2   # TokenRec's masked K-way tokenizer
  python jobs/train_tokenizer.py --index.kind=moc --index.moc_codebooks=6          # Mixture-of-Codes, 6 parallel codebooks
  python jobs/train_tokenizer.py --index.features.source=lightgcn                  # LightGCN graph vectors as X
"""

from __future__ import annotations

import json
import logging
import sys


from ttds.config import TokenizerJobConfig, describe_fields, job_argparser, parse_job_args  # noqa: E402
from ttds.data.rejects import DataError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = job_argparser(__doc__, "config keys (override with --key=value):\n" + describe_fields(TokenizerJobConfig))
    _, cfg = parse_job_args(parser, TokenizerJobConfig, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from ttds.train.tokenizer_job import train_tokenizer

    try:
        art = train_tokenizer(cfg)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = art.metrics
    summary = {"items": {k: m["items"][k] for k in ("entities", "collision_rate_before_suffix", "max_suffix")}}
    summary["items"]["used_codes_per_level"] = [r["used_codes"] for r in m["items"]["codebook_usage"]]
    if m["users"]:
        summary["users"] = {"entities": m["users"]["entities"], "collision_rate_before_suffix": m["users"]["collision_rate_before_suffix"],
                            "used_codes_per_level": [r["used_codes"] for r in m["users"]["codebook_usage"]]}
    print(json.dumps(summary, indent=2))
    print(f"tokenizer written to {art.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
