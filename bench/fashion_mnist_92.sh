#!/usr/bin/env bash
# The long Fashion-MNIST run: MobileNet V1 α = 0.25 at 64×64 (3.2 M mult-adds, 0.21 M params),
# 30 epochs with the paper's recipe, aiming at >= 92 % top-1 on the 10 000 test images in about
# 35 minutes on 2 CPU cores. Figures and the command's measured time: docs/benchmarks.md.
#
#   bash bench/fashion_mnist_92.sh                  # writes runs/fashion-mnist-92-<date>/
#   bash bench/fashion_mnist_92.sh --resume RUN_DIR # continue a stopped run
#
# Why this model: at the same cost, α = 0.5 at 32×32 (final feature map 1×1) ended at 91.7 %
# after 30 epochs, and α = 0.25 at 64×64 (final map 2×2) was ahead of it after 4 epochs.
# The random resized crop keeps at least half of each 28-pixel image (the default, 35 %, is
# meant for photos); learning rate 0.005 with RMSProp's epsilon at 0.001.
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${RUN_DIR:-runs/fashion-mnist-92-$(date +%Y%m%d-%H%M%S)}
if [[ " $* " == *" --resume "* ]]; then
    exec .venv/bin/mobilenets train "$@"
fi
start=$(date +%s)
.venv/bin/mobilenets train --model mobilenet_v1_0.25_128 --data fashion-mnist --resolution 64 --in-chans 1 \
    --epochs 30 --batch-size 128 --lr 0.005 --warmup-epochs 1 --crop-scale 0.5 1 --out "$run_dir" "$@"
echo "wall time: $(( $(date +%s) - start )) s"
# Exit status 1 when the goal is missed.
.venv/bin/python - "$run_dir/report.json" <<'PY'
import json, sys
top1 = json.load(open(sys.argv[1]))["evaluation"]["top1"]
print(f"top-1 {100 * top1:.2f} %: {'reached' if top1 >= 0.92 else 'BELOW'} the 92 % goal")
sys.exit(top1 < 0.92)
PY
