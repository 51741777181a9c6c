#!/usr/bin/env bash
# Reproduce docs/results.md: train seed and default on the three real data sets, evaluate each on its
# validation split, print the table. About 50 min on 2 cores. Usage: bash benchmarks/reproduce_results.sh [ROWS...]
# ROWS (default all): cxr-seed cxr-default pmnist-seed pmnist-default busi-seed busi-default
set -euo pipefail
cd "$(dirname "$0")/.."
US=${ULTRASONIC:-.venv/bin/ultrasonic}
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/results}
declare -A SRC=([cxr]="$DATA/chest_xray_224" [pmnist]="$DATA/pneumoniamnist_trainval.npz" [busi]="$DATA/busi")
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(cxr-seed cxr-default pmnist-seed pmnist-default busi-seed busi-default)
for row in "${rows[@]}"; do
  data=${row%-*}; preset=${row#*-}
  extra=()
  [ "$data" = pmnist ] && extra+=(--drop-duplicates)  # train images that are copies of val/test images
  echo "== $row: $US train ${SRC[$data]} --preset $preset --out $OUT/$row ${extra[*]}"
  "$US" -q train "${SRC[$data]}" --preset "$preset" --out "$OUT/$row" --overwrite "${extra[@]}"
  "$US" -q evaluate "$OUT/$row" --split val --out "$OUT/$row/eval-val" > /dev/null
done
.venv/bin/python benchmarks/results_table.py "${rows[@]/#/$OUT/}"
