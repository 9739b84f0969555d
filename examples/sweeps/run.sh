#!/usr/bin/env bash
# The paper's Fig. 3 sweeps at CPU scale, one command each (figures and results: README.md here):
#   bash examples/sweeps/run.sh gradual-k|anchor-top-p|align-batch-fraction|align-lambda [--ground-truth DIR] [--out DIR]
#                               [examples/rank/run.sh options: --data, --supernet-seeds, --jobs, ...]
# Trains the sweep's super-nets with examples/rank/run.sh --sweep NAME, the children's ground truth unless
# --ground-truth names an existing one (the children/ folder of a Table 1 run: rank sample + rank train),
# Kendall's tau of every super-net, and the figure OUT/sweep.png (plot.py). OUT: checkpoints/sweeps/NAME.
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=${1:-}
case "$NAME" in
    gradual-k|anchor-top-p|align-batch-fraction|align-lambda) shift ;;
    *) echo "usage: $0 gradual-k|anchor-top-p|align-batch-fraction|align-lambda [--ground-truth DIR] [--out DIR] [run.sh options]" >&2
       exit 2 ;;
esac
OUT=checkpoints/sweeps/${NAME//-/_} TRUTH="" PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --ground-truth) TRUTH=$2; shift 2 ;;
        *) PASS+=("$1"); shift ;;
    esac
done
mkdir -p "$OUT"
if [ -n "$TRUTH" ]; then
    [ -f "$TRUTH/children.json" ] || { echo "fairseq-magic: error: no children.json in --ground-truth $TRUTH" >&2; exit 1; }
    ln -sfn "$(realpath "$TRUTH")" "$OUT/children"
fi
bash examples/rank/run.sh --sweep "$NAME" --out "$OUT" --steps 1,2,3 "${PASS[@]}"
.venv/bin/python examples/sweeps/plot.py "$OUT"
