#!/usr/bin/env bash
# DARTS vs GAEA at CPU scale: search the same mixture super-net with each
# architecture optimiser and learning rate (bilevel: weights on train, theta on
# a held-out split), derive each argmax child, retrain it from scratch briefly
# and compare. Needs the demo's data (bash scripts/setup.sh). Steps are skipped
# when their output exists, so a rerun continues.
#   bash examples/gaea/run.sh [--search-updates 400] [--child-updates 300] \
#       [--runs "darts-adam:0.003 darts-adam:0.01 darts-adam:0.03 gaea:10 gaea:100 gaea:1000"]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
. .venv/bin/activate
SEARCH_UPDATES=400 CHILD_UPDATES=300
RUNS="darts-adam:0.003 darts-adam:0.01 darts-adam:0.03 gaea:10 gaea:100 gaea:1000"
while [ $# -gt 0 ]; do
    case "$1" in
        --search-updates) SEARCH_UPDATES=$2; shift 2 ;;
        --child-updates) CHILD_UPDATES=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        *) echo "usage: $0 [--search-updates N] [--child-updates N] [--runs 'OPTIMIZER:LR ...']" >&2; exit 2 ;;
    esac
done
DATA=data/default/bin
[ -f "$DATA/dict.txt" ] || { echo "fairseq-magic: error: run 'bash scripts/setup.sh' first (no $DATA)" >&2; exit 1; }
OUT=checkpoints/gaea
# The rank example's space: 6 layers of {MHA4, FFN, CONV3, CONV5}, hidden 64, 64 tokens.
SPACE=(--arch magic_supernet_tiny --supernet-layers 6 --encoder-embed-dim 64 --encoder-ffn-embed-dim 256)
COMMON=(--tokens-per-sample 64 --batch-size 16 --optimizer adam --adam-betas '(0.9, 0.98)' --weight-decay 0.01
        --lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 30 --cpu --num-workers 0 --seed 1
        --log-format simple --log-interval 50 --no-epoch-checkpoints)
# theta steps on the demo corpus's test split, which nothing else in this example reads;
# validation (the losses reported) stays on valid. Learning rates are scaled to a
# few hundred updates (the papers' defaults are for tens of thousands). Adam
# normalises theta's step, exponentiated gradient does not: the per-token
# gradients on theta are small here, so GAEA needs a much larger rate.
SEARCH=(--relaxation mixture --arch-objective bilevel --arch-subset test --arch-batch-size 16
        --arch-warmup-updates 50)
for run in $RUNS; do
    m=${run%%:*}-lr${run#*:}
    EXTRA=(--arch-optimizer "${run%%:*}" --arch-lr "${run#*:}")
    [ -f "$OUT/$m/done" ] || { fairseq-train "$DATA" --user-dir fairseq_magic --task magic_masked_lm \
        --criterion magic_mlm "${SPACE[@]}" "${COMMON[@]}" "${SEARCH[@]}" "${EXTRA[@]}" \
        --max-update "$SEARCH_UPDATES" --total-num-update "$SEARCH_UPDATES" \
        --validate-interval-updates 100 --save-dir "$OUT/$m" && touch "$OUT/$m/done"; }
    fairseq-magic derive "$OUT/$m/checkpoint_last.pt" -o "$OUT/$m/argmax.json"
    # the found child, retrained from scratch with fairseq's masked_lm recipe
    [ -f "$OUT/$m/child/done" ] || { fairseq-train "$DATA" --user-dir fairseq_magic --task masked_lm \
        --criterion masked_lm --arch magic_child --child-arch "$OUT/$m/argmax.json" "${COMMON[@]}" \
        --max-update "$CHILD_UPDATES" --total-num-update "$CHILD_UPDATES" --save-dir "$OUT/$m/child" \
        && touch "$OUT/$m/child/done"; }
done
python - "$OUT" $RUNS <<'EOF'
import json, sys, torch
out, runs = sys.argv[1], [r.replace(":", "-lr") for r in sys.argv[2:]]
print(f"{'search':<18}{'final entropy (nats)':>22}{'search valid loss':>19}{'retrained child loss':>22}  argmax child")
for m in runs:
    child = json.load(open(f"{out}/{m}/argmax.json"))
    search = torch.load(f"{out}/{m}/checkpoint_last.pt", map_location="cpu", weights_only=True)
    retrained = torch.load(f"{out}/{m}/child/checkpoint_last.pt", map_location="cpu", weights_only=True)
    print(f"{m:<18}{child['entropy']:>22.4f}{search['extra_state']['best']:>19.3f}"
          f"{retrained['extra_state']['best']:>22.3f}  {child['arch']}")
print("losses: masked-LM validation loss in bits; the search's is the argmax child's under the shared weights")
EOF
