#!/usr/bin/env bash
# The confirmatory campaign behind docs/results.md (docs/benchmark.md, "The confirmatory protocol"):
# per corpus, popularity, GRU4Rec, SASRec and ttds-ihe, each tuned with 4 Ray Tune trials on
# validation, then trained with seeds 0-2 under the same budget, seen items excluded, and re-scored
# with every item ranked (the paper's protocol); then the results page and README table.
#
# It takes hours on a 2-core machine and resumes where it stopped: run it again. Its ledger
# (docs/results/ledger/<corpus>/, committed) keeps every decision and test read, so it also resumes
# on a fresh machine, provided OUT and DATA are the same paths as before (they are part of each
# unit's key). Ctrl-C stops it cleanly (exit 130).
#
#   bash benchmarks/confirm.sh                 # every corpus, then the report
#   CORPORA=Instruments bash benchmarks/confirm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SOURCE=${SOURCE:-../shared/data}  # the LC-Rec folders (../shared/data/README.md)
DATA=${DATA:-/work/data}          # prepared corpora
OUT=${OUT:-/work/runs-confirm}    # models, checkpoints, sweeps: large, not kept
LEDGER=docs/results/ledger
CORPORA=${CORPORA:-"Instruments Scientific"}

for corpus in $CORPORA; do
  [ -d "$DATA/$corpus" ] || "$PY" jobs/prepare_data.py --source lcrec --path "$SOURCE/$corpus" --out "$DATA/$corpus"
  "$PY" jobs/benchmark.py --data "$DATA/$corpus" --systems popularity,gru4rec,sasrec,ttds-ihe --seeds 3 --tune-trials 4 \
    --exclude-seen --budget-epochs 40 --budget-minutes 25 --also-all-items --out "$OUT/$corpus" --ledger "$LEDGER/$corpus"
done

runs=()
for corpus in Instruments Scientific; do
  [ -f "$LEDGER/$corpus/results.json" ] && runs+=("$LEDGER/$corpus" "$LEDGER/$corpus/all-items")
done
"$PY" jobs/report.py --runs "${runs[@]}" --out docs/results.md --readme README.md --note-file docs/results/note.md
