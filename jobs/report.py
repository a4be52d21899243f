"""Render docs/results.md (and its charts) from benchmark folders' results.json, never by hand.

Reads each folder written by jobs/benchmark.py --out (results.json, details.json and the per-user
files under systems/), groups the runs by dataset and protocol, and writes:
  --out              the results page: one table per dataset and protocol (mean ± SD over runs),
                     its chart, each system paired against the strongest baseline over runs and
                     users, then which runs (commit, machine, command) and each run's own tables
  <out stem>/*.png   the charts (matplotlib), e.g. docs/results/<dataset-protocol>.png
  --readme           rewrites the README's small table between <!-- results:begin --> and
                     <!-- results:end -->

    python jobs/report.py --runs runs/benchmark/* --out docs/results.md --readme README.md

Exit 0 on success, 2 on bad input (a folder without results.json, a README without the markers).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ttds.bench.report import write_document


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, nargs="+", help="benchmark folders (jobs/benchmark.py --out), each with results.json")
    p.add_argument("--out", default="docs/results.md", help="the page to write; charts go to a folder named after it")
    p.add_argument("--readme", help="also rewrite this README's table between the results markers")
    p.add_argument("--note", default="", help="a paragraph put under the page's heading (e.g. what the runs were for)")
    p.add_argument("--note-file", default="", help="the same paragraph read from a file (a long note stays out of the page's command line)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = shlex.join(["python", "jobs/report.py", *(sys.argv[1:] if argv is None else argv)])
    note = args.note
    if args.note_file:
        try:
            note = "\n\n".join(x for x in (note, Path(args.note_file).read_text().strip()) if x)
        except OSError as e:
            print(f"error: --note-file: {e}", file=sys.stderr)
            return 2
    try:
        paths = write_document(args.runs, Path(args.out), command, Path(args.readme) if args.readme else None, note)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
