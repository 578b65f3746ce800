#!/usr/bin/env bash
# Creates .venv-bench: the project plus the peer libraries that benchmarks compare against (timm) and
# that write the foreign-format test fixtures (timm, Keras 3 on its torch backend; tests/fixtures/make_*.py).
# The peers stay out of .venv, so the library and its tests never depend on them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-bench/bin/python ] || "$PY" -m venv .venv-bench
case "$(uname -m)" in
    aarch64|arm64) .venv-bench/bin/pip install --quiet "torch==2.9.1" "torchvision==0.24.1" ;;
    *) .venv-bench/bin/pip install --quiet "torch==2.14.1" "torchvision==0.29.1" ;;
esac
.venv-bench/bin/pip install --quiet -e ".[deploy,formats,mobile]" timm keras
