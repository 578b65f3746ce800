#!/usr/bin/env bash
# The long Fashion-MNIST run: MobileNet V1 α = 0.5 at 32×32 (3.1 M mult-adds, 0.8 M params),
# 30 epochs with the paper's recipe, aiming at >= 92 % top-1 on the 10 000 test images in about
# 35 minutes on 2 CPU cores. Figures and the command's measured time: docs/benchmarks.md.
#
#   bash bench/fashion_mnist_92.sh                 # writes runs/fashion-mnist-92-<date>/
#   RUN_DIR=runs/fm92 bash bench/fashion_mnist_92.sh --resume runs/fm92   # continue after a stop
#
# The random resized crop keeps at least half of each 28-pixel image (the default, 35 %, is
# meant for photos at 224); learning rate 0.005 suits α = 0.5 with RMSProp's epsilon at 0.001.
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${RUN_DIR:-runs/fashion-mnist-92-$(date +%Y%m%d-%H%M%S)}
if [[ " $* " == *" --resume "* ]]; then
    exec .venv/bin/mobilenets train "$@"
fi
start=$(date +%s)
.venv/bin/mobilenets train --model mobilenet_v1_0.5_128 --data fashion-mnist --resolution 32 --in-chans 1 \
    --epochs 30 --batch-size 128 --lr 0.005 --warmup-epochs 1 --crop-scale 0.5 1 --out "$run_dir" "$@"
echo "wall time: $(( $(date +%s) - start )) s"
top1=$(.venv/bin/python -c "import json, sys; print(json.load(open(sys.argv[1]))['evaluation']['top1'])" "$run_dir/report.json")
.venv/bin/python -c "import sys; t = float(sys.argv[1]); print(f'top-1 {100 * t:.2f} %:', 'reached 92 %' if t >= 0.92 else 'BELOW 92 %'); sys.exit(t < 0.92)" "$top1"
