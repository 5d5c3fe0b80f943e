#!/usr/bin/env bash
# Table 1 of the STN paper, shortened, in one go on one GPU: each configs/paper/<column>.yaml with one seed
# and ITERATIONS iterations (the lr drops by 10 at a third and two thirds, as in the 150k protocol), one
# after another, then `stnexp report --paper` over all of them. A shared deadline (SIGINT: partial tables)
# keeps the whole under SECONDS.
# usage: bash scripts/gpu_table1.sh [OUT_DIR] [ITERATIONS] [SECONDS] [COLUMNS (default: "rts rotated projective elastic cluttered")]
set -u
out=${1:-/tmp/gpu-table1}
iterations=${2:-10000}
seconds=${3:-520}
columns=${4:-rts rotated projective elastic cluttered}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
deadline=$(( $(date +%s) + seconds ))
every=$(( (iterations + 2) / 3 ))
runs=()
for column in $columns; do
  left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 20 ]; then echo "$column: skipped (deadline)"; continue; fi
  timeout -s INT "$left" python3 -m stnexp train "configs/paper/$column.yaml" --set seeds=[0] \
    --set train.iterations="$iterations" --set train.every="$every" --out "/tmp/table1/$column" --force > "/tmp/table1-$column.txt" 2>&1
  echo "$column: exit $? -- $(tail -n 1 "/tmp/table1-$column.txt")"
  runs+=("/tmp/table1/$column")
done
python3 -m stnexp report "${runs[@]}" --paper --out "$out"
tar czf "$out/table1-runs.tar.gz" --exclude=checkpoints -C /tmp table1 $(cd /tmp && ls table1-*.txt)
