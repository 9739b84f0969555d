#!/usr/bin/env bash
# The demo: train a small SPOS super-net on CPU and print its children's
# validation losses under the shared weights. Every step is an ordinary
# command that can be copied; each is skipped when its output exists, so a
# second run reuses what the first one built.
#   bash examples/demo/run.sh [--corpus FILE] [--max-update N]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
. .venv/bin/activate

CORPUS="" MAX_UPDATE=300
while [ $# -gt 0 ]; do
    case "$1" in
        --corpus) CORPUS=$(realpath "$2"); shift 2 ;;
        --max-update) MAX_UPDATE=$2; shift 2 ;;
        *) echo "usage: $0 [--corpus FILE] [--max-update N]" >&2; exit 2 ;;
    esac
done
NAME=default
if [ -n "$CORPUS" ]; then
    [ -f "$CORPUS" ] || { echo "fairseq-magic: error: corpus file not found: $CORPUS" >&2; exit 1; }
    NAME=$(basename "${CORPUS%.*}")
fi
DATA=data/$NAME
SAVE=checkpoints/demo-$NAME

[ -f "$DATA/text/train.txt" ] || fairseq-magic corpus --out "$DATA/text" ${CORPUS:+--corpus "$CORPUS"}
[ -f "$DATA/spm/spm.model" ] || fairseq-magic spm --data "$DATA/text" --out "$DATA/spm" --vocab-size 8000
[ -f "$DATA/bin/dict.txt" ] || fairseq-preprocess --only-source \
    --trainpref "$DATA/spm/train.spm" --validpref "$DATA/spm/valid.spm" --testpref "$DATA/spm/test.spm" \
    --destdir "$DATA/bin" --workers 2

# SPOS super-net training: a uniformly sampled child per update. (Skipped when a
# previous run finished: resuming a finished run would still take one more step.)
[ -f "$SAVE/done-$MAX_UPDATE" ] || fairseq-train "$DATA/bin" --user-dir fairseq_magic \
    --task magic_masked_lm --criterion magic_mlm --arch magic_supernet_tiny \
    --sampler uniform --valid-children 4 \
    --tokens-per-sample 128 --batch-size 16 \
    --optimizer adam --adam-betas '(0.9, 0.98)' --weight-decay 0.01 --clip-norm 1.0 \
    --lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 30 --total-num-update "$MAX_UPDATE" \
    --max-update "$MAX_UPDATE" --validate-interval-updates 100 --save-interval-updates 100 \
    --keep-interval-updates 1 --no-epoch-checkpoints --cpu --num-workers 0 \
    --log-format simple --log-interval 25 --seed 1 --save-dir "$SAVE"
touch "$SAVE/done-$MAX_UPDATE"

# The validation loss of several children under the shared weights.
fairseq-validate "$DATA/bin" --user-dir fairseq_magic --task magic_masked_lm \
    --path "$SAVE/checkpoint_last.pt" --valid-children 6 --batch-size 16 --cpu --num-workers 0 \
    2>&1 | grep -E "validation child|valid on" | sed -E 's/.*\| (validation child|valid on)/\1/'
