#!/usr/bin/env bash
# Fig. 2 and 8 at CPU scale: gradient cosine similarity on the analysis space
# (Table 6's operators, scaled down: hidden 96, MHA6/MHA8 over Q/K/V 48, FFN 96,
# FFN' 104 keeping FFN'/FFN = 832/768, CONV3, CONV5; 12 layers), for a SPOS
# super-net and one trained with alignment to the average of random children
# (App. A.2), compared side by side. Needs the demo's data (bash scripts/setup.sh).
#   bash examples/interference/run.sh [--updates 600] [--repeats 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
. .venv/bin/activate
UPDATES=600 REPEATS=10
while [ $# -gt 0 ]; do
    case "$1" in
        --updates) UPDATES=$2; shift 2 ;;
        --repeats) REPEATS=$2; shift 2 ;;
        *) echo "usage: $0 [--updates N] [--repeats R]" >&2; exit 2 ;;
    esac
done
DATA=data/default/bin
[ -f "$DATA/dict.txt" ] || { echo "fairseq-magic: error: run 'bash scripts/setup.sh' first (no $DATA)" >&2; exit 1; }
OUT=checkpoints/interference
SPACE=(--arch magic_supernet_analysis --encoder-embed-dim 96 --attention-qkv-dim 48 --encoder-ffn-embed-dim 96
       --candidate-ops MHA6,MHA8,FFN,FFN104,CONV3,CONV5 --embed-factor-dim 0)
COMMON=(--tokens-per-sample 64 --batch-size 16 --optimizer adam --adam-betas '(0.9, 0.98)' --weight-decay 0.01
        --lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 30 --total-num-update "$UPDATES"
        --max-update "$UPDATES" --cpu --num-workers 0 --seed 1 --log-format simple --log-interval 100
        --no-epoch-checkpoints --validate-interval-updates 1000000)
for m in spos average; do
    case $m in
        spos) EXTRA=(--sampler uniform) ;;
        average) EXTRA=(--sampler uniform --align-lambda 0.5 --align-every 1 --align-warmup-epochs 0
                        --align-target average --align-avg-children 3) ;;
    esac
    [ -f "$OUT/$m/done" ] || { fairseq-train "$DATA" --user-dir fairseq_magic --task magic_masked_lm \
        --criterion magic_mlm "${SPACE[@]}" "${COMMON[@]}" "${EXTRA[@]}" --save-dir "$OUT/$m" \
        && touch "$OUT/$m/done"; }
done
fairseq-magic interference --checkpoint "$OUT/spos/checkpoint_last.pt" --compare "$OUT/average/checkpoint_last.pt" \
    --labels SPOS,aligned --layers 0,3,6 --max-m 4 --repeats "$REPEATS" --sentences 64 --cpu --out "$OUT/figures"
