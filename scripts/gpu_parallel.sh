#!/usr/bin/env bash
# GPU checks of train.parallel and the CUDA tests, a few minutes on one H100/H200: torchrun with one
# process and nccl in jobs and data mode against one plain process (results and images/s), on the
# smoke config and on configs/rts.yaml shortened to ITERS iterations.
# usage: bash scripts/gpu_parallel.sh [OUT_DIR] [ITERS]
set -u
out=${1:-/tmp/gpu-parallel}
iters=${2:-3000}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$out/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_geometry.py tests/test_models.py tests/test_distortions.py 2>&1 | tail -n 25 | tee "$out/cuda-tests.txt"
tr="python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m stnexp"
short="--set train.iterations=$iters --set train.epochs=null --set seeds=[0] --set device=cuda"
for mode in single jobs data; do
  start=$(date +%s.%N)
  if [ "$mode" = single ]; then
    timeout 150 python3 -m stnexp train configs/rts.yaml --out "/tmp/par-$mode" --force $short > "$out/rts-$mode.txt" 2>&1
  else
    timeout 150 $tr train configs/rts.yaml --out "/tmp/par-$mode" --force $short --set train.parallel=$mode > "$out/rts-$mode.txt" 2>&1
  fi
  rc=$?
  echo "rts $mode: exit $rc, $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s wall" | tee -a "$out/summary.txt"
  cp "/tmp/par-$mode/results.json" "$out/results-$mode.json" 2>/dev/null
  cp "/tmp/par-$mode/metrics.csv" "$out/metrics-$mode.csv" 2>/dev/null
  tail -n 12 "$out/rts-$mode.txt"
done
python3 - "$out" <<'PY' | tee -a "$out/summary.txt"
import csv, json, sys
out = sys.argv[1]
for mode in ("single", "jobs", "data"):
    try:
        rows = [r for r in json.load(open(f"{out}/results-{mode}.json")) if r["checkpoint"] == "best"]
        m = list(csv.DictReader(open(f"{out}/metrics-{mode}.csv")))
    except OSError:
        print(mode, "no results"); continue
    speed = {r["model"]: r["images_per_s"] for r in m if r["epoch"] == max(x["epoch"] for x in m)}
    print(mode, {r["model"]: r["error"] for r in rows}, "last-epoch images/s", speed)
PY
