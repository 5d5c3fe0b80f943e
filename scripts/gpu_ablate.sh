#!/usr/bin/env bash
# The RTS recipe ablations in one go on one H100/H200, one run after another (runs on one GPU take
# turns): configs/ablations/rts-recipe.yaml (7 models, one change each, 3 seeds), then its cnn and st-cnn
# with all 60,000 training digits (no validation set: the last epoch counts as best), then with weight
# decay 5e-4. Each is shortened to ITERS iterations (lr / 10 at a third and two thirds). A shared deadline
# (SIGINT: partial tables) keeps the whole under SECONDS. Each run's results.md (per model: mean +- std
# of the test error over the seeds, best and last checkpoint) goes into OUT_DIR/summary.txt. Arguments
# after SECONDS go to every run (e.g. --set train.compile=true).
# usage: bash scripts/gpu_ablate.sh [OUT_DIR] [ITERS] [SECONDS] [--set KEY=VALUE ...]
set -u
out=${1:-/tmp/gpu-ablate}
iters=${2:-10000}
seconds=${3:-540}
shift $(( $# < 3 ? $# : 3 ))
extra=("$@")
mkdir -p "$out"
export PYTHONUNBUFFERED=1
deadline=$(( $(date +%s) + seconds ))
left() { echo $(( deadline - $(date +%s) )); }
sum="$out/summary.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$sum"
pair='models={cnn: {arch: cnn}, st-cnn: {arch: cnn, stn: {transform: affine}}}'
ablate() {  # NAME, then --set arguments for configs/ablations/rts-recipe.yaml
  local name=$1; shift
  if [ "$(left)" -lt 40 ]; then echo "$name: skipped (deadline)" | tee -a "$sum"; return; fi
  local start=$(date +%s)
  timeout -s INT "$(( $(left) - 15 ))" python3 -m stnexp train configs/ablations/rts-recipe.yaml \
    --set train.iterations="$iters" --set train.every=$(( (iters + 2) / 3 )) "$@" "${extra[@]}" \
    --out "/tmp/ablate/$name" --force > "$out/$name.txt" 2>&1
  echo "$name: exit $?, $(( $(date +%s) - start )) s whole process" | tee -a "$sum"
  # results.md already holds each model's mean +- std over the seeds, best and last checkpoint
  { cat "/tmp/ablate/$name/results.md" 2>/dev/null || echo "  no results"; } | tee -a "$sum"
  # and the validation accuracy that decides (each model's best epoch, mean over the seeds)
  python3 - "/tmp/ablate/$name/metrics.csv" <<'PY' 2>/dev/null | tee -a "$sum"
import csv, statistics, sys
best = {}
for r in csv.DictReader(open(sys.argv[1])):
    if r["val_acc"]:
        key = (r["model"], r["seed"])
        best[key] = max(best.get(key, 0.0), float(r["val_acc"]))
for model in dict.fromkeys(m for m, _ in best):
    vals = [v for (m, _), v in best.items() if m == model]
    print(f"  val acc % {model}: {100 * statistics.mean(vals):.2f} ({len(vals)} seeds)")
PY
  cp "/tmp/ablate/$name/analysis.md" "$out/$name-analysis.md" 2>/dev/null
}
ablate models
ablate all-60k --set "$pair" --set data.train_size=60000 --set data.val_size=0
ablate wd5e-4 --set "$pair" --set train.weight_decay=0.0005
tar czf "$out/ablate-runs.tar.gz" --exclude=checkpoints -C /tmp ablate
