#!/usr/bin/env bash
# README command 1: install everything, build the default corpus, run the demo.
#   bash scripts/setup.sh                      # embedded default corpus
#   bash scripts/setup.sh --corpus my.txt      # your own text, one paragraph per line
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec bash examples/demo/run.sh "$@"
