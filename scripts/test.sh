#!/usr/bin/env bash
# README command 2: install what the tests need, then run the whole suite,
# spread over the machine's cores (at most 4 workers; pass -n 0 to run in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -n auto --maxprocesses 4 tests "$@"
