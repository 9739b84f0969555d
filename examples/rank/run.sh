#!/usr/bin/env bash
# Table 1 at CPU scale: Kendall's tau of SPOS, MAGIC-T, MAGIC-A and MAGIC-AT
# super-nets against the same children trained stand-alone.
# Needs the demo's data (bash scripts/setup.sh). Every step is skipped when its
# output exists; children are trained one by one and a rerun continues.
#   bash examples/rank/run.sh [--children 20] [--supernet-updates 600] [--child-updates 300]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
. .venv/bin/activate
CHILDREN=20 NET_UPDATES=600 CHILD_UPDATES=300
while [ $# -gt 0 ]; do
    case "$1" in
        --children) CHILDREN=$2; shift 2 ;;
        --supernet-updates) NET_UPDATES=$2; shift 2 ;;
        --child-updates) CHILD_UPDATES=$2; shift 2 ;;
        *) echo "usage: $0 [--children M] [--supernet-updates N] [--child-updates N]" >&2; exit 2 ;;
    esac
done
DATA=data/default/bin
[ -f "$DATA/dict.txt" ] || { echo "fairseq-magic: error: run 'bash scripts/setup.sh' first (no $DATA)" >&2; exit 1; }
OUT=checkpoints/rank
# A small space: 6 layers of {MHA4, FFN, CONV3, CONV5}, hidden 64, 64 tokens.
SPACE=(--arch magic_supernet_tiny --supernet-layers 6 --encoder-embed-dim 64 --encoder-ffn-embed-dim 256)
COMMON=(--tokens-per-sample 64 --batch-size 16 --optimizer adam --adam-betas '(0.9, 0.98)' --weight-decay 0.01
        --lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 30 --cpu --num-workers 0 --seed 1
        --log-format simple --log-interval 100 --no-epoch-checkpoints --validate-interval-updates 1000000)
ALIGN=(--align-lambda 0.5 --align-every 2 --align-warmup-epochs 0 --align-warmup-updates "$((NET_UPDATES / 3))"
       --anchor-eval-interval 50 --score-sentences 128 --anchor-metric loss)
for m in spos magic_t magic_a magic_at; do
    case $m in
        spos) EXTRA=(--sampler uniform) ;;
        magic_t) EXTRA=(--sampler gradual --gradual-k 1) ;;
        magic_a) EXTRA=(--sampler uniform "${ALIGN[@]}") ;;
        magic_at) EXTRA=(--sampler gradual --gradual-k 1 "${ALIGN[@]}") ;;
    esac
    [ -f "$OUT/$m/done" ] || { fairseq-train "$DATA" --user-dir fairseq_magic --task magic_masked_lm \
        --criterion magic_mlm "${SPACE[@]}" "${COMMON[@]}" "${EXTRA[@]}" --max-update "$NET_UPDATES" \
        --total-num-update "$NET_UPDATES" --save-dir "$OUT/$m" && touch "$OUT/$m/done"; }
done
[ -f "$OUT/children/children.json" ] || fairseq-magic rank sample --checkpoint "$OUT/spos/checkpoint_last.pt" \
    --out "$OUT/children" --children "$CHILDREN" --seed 1
fairseq-magic rank train --dir "$OUT/children" --data "$DATA" --train-args \
    "--tokens-per-sample 64 --batch-size 16 --optimizer adam --adam-betas '(0.9, 0.98)' --weight-decay 0.01 \
     --lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 30 --total-num-update $CHILD_UPDATES \
     --max-update $CHILD_UPDATES --cpu --num-workers 0 --seed 1 --log-format simple"
fairseq-magic rank correlate --dir "$OUT/children" --out "$OUT/table1" --labels SPOS,MAGIC-T,MAGIC-A,MAGIC-AT \
    --checkpoints "$OUT/spos/checkpoint_last.pt" "$OUT/magic_t/checkpoint_last.pt" \
    "$OUT/magic_a/checkpoint_last.pt" "$OUT/magic_at/checkpoint_last.pt" --sentences 256 --cpu
