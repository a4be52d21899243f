#!/usr/bin/env bash
# GPU checks on a CUDA machine with the project installed (`pip install -e '.[gpu]'`), one step
# after the other on one local Ray (several Ray instances side by side on one machine slowed
# worker start-up to minutes):
#   1. tests/gpu: device/dtype choice, TTDS training under ZeRO-2 and ZeRO-3 on the GPU with a
#      ~100M-parameter backbone (prints peak GPU memory and examples/s), a request served on CUDA;
#   2. the benchmark on a prepared corpus (default: runs/data/Instruments) with training and TTDS
#      test ranking on the GPU, SASRec beside TTDS.
# Usage: bash benchmarks/gpu_check.sh [CORPUS_DIR] [OUT_DIR] [BUDGET_MINUTES]
set -euo pipefail
CORPUS=${1:-runs/data/Instruments}
OUT=${2:-runs/benchmark/gpu}
MINUTES=${3:-10}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run this on a GPU machine')"
mkdir -p "$OUT"
python -m pytest -m gpu tests/gpu -s -q 2>&1 | tee "$OUT/gpu_tests.log"
python jobs/benchmark.py --data "$CORPUS" --systems popularity,sasrec,ttds --gpu on \
    --budget-minutes "$MINUTES" --budget-epochs 30 --set ttds:eval.batch_size=256 --out "$OUT" 2>&1 | tee "$OUT/benchmark.log"
echo "results: $OUT/results.md"
