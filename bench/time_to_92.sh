#!/usr/bin/env bash
# Time to 92 % top-1 on the Fashion-MNIST test set, 300 s the goal on 2 CPU cores. The recipe is the
# best of the search in docs/benchmarks.md ("The search for the fastest recipe to 92 %"): the main
# job's model (α = 0.25 at 40 px) for 26 epochs with light crops (90–100 % of the area), flips and
# label smoothing 0.1, in batches of 256 at lr 0.02 (1.2× the images/s of batch 128 at lr 0.01, which
# the search used). With ConvBNAct's fast paths and freed memory kept, 22 epochs took 205–221 s but one
# seed of 3 ended at 91.94 %; 26 epochs: 92.20–92.44 % over 3 seeds in 242–261 s. The test images are
# evaluated only after the last epoch (--eval-every 26), and without an EMA of the weights (--ema-decay 0: the figure is the raw
# weights', which the EMA does not change, and its update is 3 % of a step). Prints the wall time and the LAST
# epoch's top-1 of the raw weights (not the best epoch: the test images are the only held-out ones,
# and picking an epoch on them would overstate the result); exits 1 below 92 %.
#
#   bash bench/time_to_92.sh                          # writes runs/time-to-92-<date>/
#   bash bench/time_to_92.sh --threads 2 --seed 1     # extra options go to `mobilenets train`
#
# The images are transformed as whole batches in memory (batched augmentation, the default for
# Fashion-MNIST), without a loader process. It trains on 1 thread by default; --threads 2 puts both
# cores on training (faster only when nothing else runs: see the docs).
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${RUN_DIR:-runs/time-to-92-$(date +%Y%m%d-%H%M%S)}
start=$(date +%s.%N)
.venv/bin/mobilenets train --model mobilenet_v1_0.25_40 --resolution 40 --data fashion-mnist \
    --epochs 26 --eval-every 26 --ema-decay 0 --batch-size 256 --lr 0.02 --crop-scale 0.9 1 --label-smoothing 0.1 \
    --warmup-epochs 0 --out "$run_dir" "$@"
wall=$(echo "$(date +%s.%N) - $start" | bc)
.venv/bin/python - "$run_dir/metrics.jsonl" "$wall" <<'PY'
import json, sys
last = json.loads(open(sys.argv[1]).read().splitlines()[-1])
top1, wall = last["val_top1"], float(sys.argv[2])
print(f"wall time {wall:.0f} s; last epoch ({last['epoch']}) top-1 {100 * top1:.2f} %: "
      f"{'reached' if top1 >= 0.92 else 'BELOW'} the 92 % goal")
sys.exit(top1 < 0.92)
PY
