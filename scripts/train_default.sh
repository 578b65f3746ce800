#!/usr/bin/env bash
# The quick run: a small MobileNet (α = 0.25, 0.8 M mult-adds at 32×32) trained on the full
# Fashion-MNIST for 3 epochs, then evaluated, with a short report. A few minutes on 2 CPU cores.
# Three epochs are too few to need augmentation, and RMSProp's mean square starting at 1 already
# ramps the first steps up, so neither is used; extra options are passed on (e.g. --epochs 5).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/mobilenets train --model mobilenet_v1_0.25_32 --data fashion-mnist \
    --epochs 3 --no-augment --warmup-epochs 0 --lr 0.01 --out "${RUN_DIR:-runs/fashion-mnist-quick-$(date +%Y%m%d-%H%M%S)}" "$@"
