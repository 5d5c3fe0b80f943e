#!/usr/bin/env bash
# Every pending GPU measurement in one call of at most 9 minutes on one H100 or H200, writing its tables
# under OUT_DIR (the device tool's $OUT). Run it first in any session that is lent a GPU:
#   ../shared/tools/gpu-wheels   (here, once: pydantic's wheels into .whl/), then run with carry [".whl"]:
#   bash scripts/gpu_queue.sh "$OUT"
# What it runs, in order, under one shared deadline (SIGINT at the deadline: partial tables, resumable):
#   0. the rectification finalists with 3 seeds, configs/ablations/rectify-confirm.yaml on R and RTS
#      (results and analysis.md with the paired test across seeds);
#   1. the CUDA and fused tests (tests/test_cuda.py, tests/test_fused.py);
#   2. Table 1 by the fast recipe: configs/fast/<column>.yaml for R and RTS, and for P, E and TC
#      configs/ablations/table1-<column>.yaml (both transformers and the FCN rows), 3 seeds, 1.5M training
#      images per model, then `stnexp report --paper` over them (table1-fast.md);
#   3. the whole rectification search (configs/ablations/rectify.yaml, 12 levers, one seed) on RTS, which
#      the CPU ran for two levers only;
#   4. bench.py --precision (fp32 against bf16 on the GPU) and --fused 3 (one model after another,
#      stacked, together) if time is left.
# usage: bash scripts/gpu_queue.sh [OUT_DIR] [SECONDS (default 520)] [--set KEY=VALUE ...]
# The --sets go to every training run: at tiny sizes on a CPU, to try the script itself:
#   bash scripts/gpu_queue.sh /tmp/q 300 --set device=cpu --set train.epochs=1 --set data.train_size=512 --set data.val_size=256
set -u
out=${1:-/tmp/gpu-queue}
seconds=${2:-520}
shift $(( $# < 2 ? $# : 2 ))
sets=("$@")
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
fi
deadline=$(( $(date +%s) + seconds ))
left() { echo $(( deadline - $(date +%s) )); }
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch; print('torch', torch.__version__)"; } > "$out/machine.txt" 2>&1

# the rectification finalists first (configs/ablations/rectify-confirm.yaml: 3 seeds, identical batches,
# the fast recipe's schedule), on R and then RTS
for column in rotated rts; do
  timeout -s INT "$(( $(left) - 20 ))" python3 -m stnexp train configs/ablations/rectify-confirm.yaml "${sets[@]}" \
    --set "data.variants={$column: {preset: $column}}" --out "/tmp/rectify/$column" --force > "$out/rectify-$column.txt" 2>&1
  echo "rectify-confirm $column: exit $? -- $(tail -n 1 "$out/rectify-$column.txt")"
  cp "/tmp/rectify/$column/analysis.md" "$out/rectify-$column-analysis.md" 2>/dev/null
done

timeout -s INT 90 python3 -m pytest -q tests/test_cuda.py tests/test_fused.py > "$out/tests.txt" 2>&1
echo "tests: exit $? -- $(tail -n 1 "$out/tests.txt")"

runs=()
for column in rts rotated projective elastic cluttered; do  # the columns with targets first
  config=configs/fast/$column.yaml
  # P, E and TC: both transformers and the FCN rows side by side (configs/ablations/table1-<column>.yaml)
  [ -f "configs/ablations/table1-$column.yaml" ] && config=configs/ablations/table1-$column.yaml
  if [ "$(left)" -lt 30 ]; then echo "$column: skipped (deadline)"; continue; fi
  timeout -s INT "$(( $(left) - 20 ))" python3 -m stnexp train "$config" --set "seeds=[0, 1, 2]" "${sets[@]}" \
    --out "/tmp/fast/$column" --force > "$out/fast-$column.txt" 2>&1
  echo "$column: exit $? -- $(tail -n 1 "$out/fast-$column.txt")"
  runs+=("/tmp/fast/$column")
done
[ ${#runs[@]} -gt 0 ] && python3 -m stnexp report "${runs[@]}" --paper --out "$out/table1-fast" > "$out/table1-fast.md" 2>&1
tar czf "$out/fast-runs.tar.gz" --exclude=checkpoints -C /tmp fast

if [ "$(left)" -gt 90 ]; then
  timeout -s INT "$(( $(left) - 20 ))" python3 -m stnexp train configs/ablations/rectify.yaml "${sets[@]}" \
    --set "data.variants={rts: {preset: rts}}" --out /tmp/rectify/search-rts --force > "$out/rectify-search-rts.txt" 2>&1
  echo "rectify search rts: exit $? -- $(tail -n 1 "$out/rectify-search-rts.txt")"
  cp /tmp/rectify/search-rts/analysis.md "$out/rectify-search-rts-analysis.md" 2>/dev/null
fi
tar czf "$out/rectify-runs.tar.gz" --exclude=checkpoints -C /tmp rectify 2>/dev/null

if [ "$(left)" -gt 60 ]; then
  timeout -s INT "$(( $(left) - 5 ))" python3 scripts/bench.py --device cuda --precision --n 51200 --pairs 2 > "$out/bench-precision.txt" 2>&1
  echo "bench --precision: exit $?"
fi
if [ "$(left)" -gt 60 ]; then
  timeout -s INT "$(( $(left) - 5 ))" python3 scripts/bench.py --device cuda --fused 3 --n 25600 --pairs 2 > "$out/bench-fused.txt" 2>&1
  echo "bench --fused 3: exit $?"
fi
echo "done with $(left) s of the deadline left"
