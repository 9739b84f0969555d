#!/usr/bin/env bash
# README command 2: install what the tests need, then run the whole suite,
# spread over the machine's cores (at most 4 workers; pass -n 0 to run in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# one worker per core, each test's fairseq-train a process of its own: one thread each, or the threads
# oversubscribe the cores and every test runs several times slower
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -n auto --maxprocesses 4 tests "$@"
