#!/usr/bin/env bash
# Sets up .venv and runs the main job on the built-in defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/train_default.sh "$@"
