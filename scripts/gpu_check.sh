#!/usr/bin/env bash
# The GPU checks in one go, a few minutes on one H100/H200: the CUDA tests, the benchmark (CUDA graphs
# on and off; 3 seeds one after another, stacked, or in one graph), 3 seeds of configs/rts.yaml for 10
# epochs with train.fuse off and on, and configs/rts.yaml under a time limit (SIGINT at the limit:
# partial table, resumable).
# usage: bash scripts/gpu_check.sh [OUT_DIR] [RTS_SECONDS]
set -u
out=${1:-/tmp/gpu-check}
limit=${2:-330}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"; } 2>&1 | tee "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_geometry.py tests/test_models.py tests/test_cli.py tests/test_fused.py 2>&1 | tee "$out/cuda-tests.txt"
python3 scripts/bench.py --device cuda --n 51200 2>&1 | grep -v Warning | tee "$out/bench.txt"
python3 scripts/bench.py --device cuda --n 51200 --skip-conventional --no-cuda-graphs 2>&1 | grep -v Warning | tee -a "$out/bench.txt"
python3 scripts/bench.py --device cuda --n 25600 --fused 3 2>&1 | grep -v Warning | tee "$out/bench-fused.txt"
# train.fuse off and on: configs/rts.yaml (CNN + ST-CNN, 3 seeds) shortened to 10 epochs, one after the other
for fuse in off on; do
  start=$(date +%s)
  python3 -m stnexp train configs/rts.yaml --set train.epochs=10 --set train.fuse=$fuse --out /tmp/fuse-$fuse --force > "$out/fuse-$fuse.txt" 2>&1
  echo "train.fuse=$fuse exit $? after $(( $(date +%s) - start )) s; training seconds of all models (metrics.csv): $(python3 -c "import csv; print(round(sum(float(r['seconds']) for r in csv.DictReader(open('/tmp/fuse-$fuse/metrics.csv'))), 1))")" | tee -a "$out/fuse.txt"
  cp /tmp/fuse-$fuse/results.md "$out/fuse-$fuse-results.md" 2>/dev/null
done
start=$(date +%s)
timeout -s INT "$limit" python3 -m stnexp train configs/rts.yaml --out /tmp/rts-run --force > "$out/rts-train.txt" 2>&1
echo "rts.yaml exit $? after $(( $(date +%s) - start )) s" | tee -a "$out/rts-train.txt"
cp /tmp/rts-run/results.md /tmp/rts-run/metrics.csv "$out/" 2>/dev/null
cp /tmp/rts-run/stn/rts/st-cnn-s0.png "$out/" 2>/dev/null
tail -n 30 "$out/rts-train.txt"
