"""Leak check: does a trained TTDS model decode next items from the user's semantic ID?

Ranks sampled users' last training item and their validation item with their own user ID in the
prompt and with another user's (see ttds.bench.user_id_leak for why). Prints a table and writes
JSON when --out is given.

    python benchmarks/user_id_leak.py --model runs/benchmark/<run>/systems/ttds-uid/model --users 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained model folder (with a user ID table)")
    p.add_argument("--users", type=int, default=2000, help="sampled users per case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()

    import torch

    from ttds.bench.user_id_leak import leak_table, user_id_leak

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        res = user_id_leak(args.model, args.users, args.seed, args.beam)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"prompts carry the user ID: {res['prompts_carry_user_id']}; {res['users']} users per case")
    print(leak_table(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
