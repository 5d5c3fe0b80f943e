#!/usr/bin/env bash
# train.fuse on one H100/H200 in a few minutes: the CUDA and fused tests, `bench.py --fused 3` (3 seeds
# one after another, stacked, or in one graph with a stream per model), then the paper's protocol for
# CNN + ST-CNN on RTS with 3 seeds, shortened to ITERS iterations (lr / 10 at a third and two thirds),
# with train.fuse on and then off (whole process and training seconds), and a one-process torchrun
# (nccl) of the smoke config in jobs mode with train.fuse on. A shared deadline (SIGINT: partial
# tables) keeps the whole under SECONDS.
# usage: bash scripts/gpu_fuse.sh [OUT_DIR] [ITERS] [SECONDS]
set -u
out=${1:-/tmp/gpu-fuse}
iters=${2:-15000}
seconds=${3:-480}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
deadline=$(( $(date +%s) + seconds ))
left() { echo $(( deadline - $(date +%s) )); }
sum="$out/summary.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$sum"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_fused.py 2>&1 | tail -n 15 | tee -a "$sum"
timeout 120 python3 scripts/bench.py --device cuda --n 25600 --fused 3 2>&1 | grep -v Warning | tee "$out/bench-fused.txt"
models='models={cnn: {arch: cnn}, st-cnn: {arch: cnn, stn: {transform: affine, loc_lr_scale: 0.1}}}'
for fuse in on off; do
  if [ "$(left)" -lt 30 ]; then echo "protocol fuse=$fuse: skipped (deadline)" | tee -a "$sum"; continue; fi
  start=$(date +%s.%N)
  timeout -s INT "$(( $(left) - 25 ))" python3 -m stnexp train configs/paper/rts.yaml --set "$models" \
    --set train.iterations="$iters" --set train.every=$(( iters / 3 )) --set train.fuse=$fuse \
    --out "/tmp/fuse-$fuse" --force > "$out/protocol-$fuse.txt" 2>&1
  rc=$?
  python3 - "$fuse" "$rc" "$start" "$(date +%s.%N)" <<'PY' | tee -a "$sum"
import csv, json, sys
fuse, rc, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
d = f"/tmp/fuse-{fuse}"
try:
    m = list(csv.DictReader(open(f"{d}/metrics.csv")))
    last = {}
    for r in m:  # the step count is cumulative: each model's last row
        last[(r["seed"], r["model"])] = int(r["step"])
    steps = sum(last.values())
    train_s = round(sum(float(r["seconds"]) for r in m), 1)
except OSError:
    steps, train_s = "?", "?"
try:
    best = {(r["model"], r["seed"]): r["error"] for r in json.load(open(f"{d}/results.json")) if r["checkpoint"] == "best"}
except OSError:
    best = "no results"
print(f"protocol fuse={fuse}: exit {rc}, whole process {end - start:.1f} s, training seconds of all models {train_s} (model-steps {steps}); best test errors {best}")
PY
  tail -n 4 "$out/protocol-$fuse.txt"
done
if [ "$(left)" -gt 40 ]; then
  timeout "$(( $(left) - 5 ))" python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m stnexp train configs/smoke.yaml \
    --set device=cuda --set 'seeds=[0, 1]' --set train.parallel=jobs --set train.fuse=on --out /tmp/fuse-jobs --force > "$out/torchrun.txt" 2>&1
  echo "torchrun jobs, train.fuse=on, 1 process (nccl): exit $?" | tee -a "$sum"
  tail -n 8 "$out/torchrun.txt"
else
  echo "torchrun: skipped (deadline)" | tee -a "$sum"
fi
