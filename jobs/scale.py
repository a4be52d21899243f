"""How ttds's costs grow with the catalogue: measure, then render docs/scaling.md.

Examples:
  python jobs/scale.py                                   # 10k, 100k, 1M items (resumes from runs/scale/results.json)
  python jobs/scale.py --sizes 10000 100000 --measures beam item_head
  python jobs/scale.py --render-only                     # re-render docs/scaling.md from results.json

Each measurement runs in its own niced subprocess with a timeout; a stopped run continues
from the sizes and measures already in results.json (failed ones are retried).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


from ttds.bench.scale import MEASURES, ScaleConfig, render, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    d = ScaleConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=list(d.sizes))
    p.add_argument("--measures", nargs="+", choices=MEASURES, default=list(d.measures))
    p.add_argument("--out", default=d.out, help="work folder and results.json")
    p.add_argument("--doc", default=d.doc)
    p.add_argument("--timeout-s", type=int, default=d.timeout_s, help="per measurement")
    p.add_argument("--users", type=int, default=d.users)
    p.add_argument("--train-steps", type=int, default=d.train_steps)
    p.add_argument("--negatives", type=int, default=d.negatives)
    p.add_argument("--render-only", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if a.render_only:
        render(json.loads((Path(a.out) / "results.json").read_text()), Path(a.doc))
        return 0
    cfg = ScaleConfig(sizes=tuple(a.sizes), measures=tuple(a.measures), out=a.out, doc=a.doc, timeout_s=a.timeout_s,
                      users=a.users, train_steps=a.train_steps, negatives=a.negatives)
    run(cfg)
    print(f"results: {Path(a.out) / 'results.json'}; report: {a.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
