#!/usr/bin/env bash
# Sets up .venv and runs the linter, the formatter's check (Python files and Markdown code blocks) and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Tiny test models run fastest on one thread each, and a busy machine does not stall them.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest "$@"
