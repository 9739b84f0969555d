#!/usr/bin/env bash
# The demo, end to end on the CPU: train a small SPOS super-net, print its
# children's validation losses under the shared weights, search it under a
# parameter limit, export the found child with its inherited weights, and
# fine-tune it with fairseq's sentence_prediction recipe on a labelled data set
# built from the installed packages. Every step is an ordinary command that can
# be copied; each is skipped when its output exists, so a second run reuses
# what the first one built.
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
SEARCH=$SAVE/search
CHILD=$SAVE/child
TOPICS=data/topics
FINETUNE=$SAVE/finetune

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

# Search the super-net: evolution under a parameter limit (the whole model).
[ -f "$SEARCH/best.json" ] || fairseq-magic search --checkpoint "$SAVE/checkpoint_last.pt" --out "$SEARCH" \
    --population 16 --generations 5 --parents 4 --sentences 128 --max-params 1.7e6 --seed 1

# Export the found child as a stand-alone RoBERTa-compatible model (inherited weights).
[ -f "$CHILD/model.pt" ] || fairseq-magic export --checkpoint "$SAVE/checkpoint_last.pt" \
    --arch "$SEARCH/best.json" --out "$CHILD/model.pt" --sentencepiece-model "$DATA/spm/spm.model"

# A labelled sentence set in GLUE's layout: numpy/scipy vs standard-library docstrings.
[ -f "$TOPICS/raw/train.label" ] || fairseq-magic topics --out "$TOPICS/raw" --per-label 1000
[ -f "$TOPICS/raw/dev.input0.spm" ] || fairseq-magic encode --spm "$DATA/spm/spm.model" \
    "$TOPICS/raw/train.input0" "$TOPICS/raw/dev.input0"
[ -f "$TOPICS/bin-$NAME/input0/dict.txt" ] || fairseq-preprocess --only-source \
    --trainpref "$TOPICS/raw/train.input0.spm" --validpref "$TOPICS/raw/dev.input0.spm" \
    --destdir "$TOPICS/bin-$NAME/input0" --srcdict "$DATA/bin/dict.txt" --workers 2
[ -f "$TOPICS/bin-$NAME/label/dict.txt" ] || fairseq-preprocess --only-source \
    --trainpref "$TOPICS/raw/train.label" --validpref "$TOPICS/raw/dev.label" \
    --destdir "$TOPICS/bin-$NAME/label" --workers 2

# Fine-tune exactly as fairseq's RoBERTa GLUE recipe does (sentence_prediction).
[ -f "$FINETUNE/done" ] || { fairseq-train "$TOPICS/bin-$NAME" --user-dir fairseq_magic \
    --restore-file "$CHILD/model.pt" --reset-optimizer --reset-dataloader --reset-meters \
    --task sentence_prediction --criterion sentence_prediction --num-classes 2 \
    --arch magic_child --child-arch "$SEARCH/best.json" --max-positions 128 --shorten-method truncate \
    --init-token 0 --separator-token 2 --batch-size 16 --required-batch-size-multiple 1 \
    --optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-06 --weight-decay 0.1 --clip-norm 0.0 \
    --lr 1e-4 --lr-scheduler polynomial_decay --total-num-update 300 --warmup-updates 18 --max-epoch 3 \
    --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric --no-epoch-checkpoints \
    --cpu --num-workers 0 --log-format simple --log-interval 50 --seed 1 --save-dir "$FINETUNE" \
    && touch "$FINETUNE/done"; }

python - "$SEARCH/best.json" "$FINETUNE/checkpoint_best.pt" <<'PY'
import json, sys
import torch
best = json.load(open(sys.argv[1]))
tuned = torch.load(sys.argv[2], map_location="cpu", weights_only=True)  # our own checkpoint: plain data
print(f"found architecture: {best['arch']}")
print(f"size: {best['params']:,} parameters, {best['flops'] / 1e9:.3f} GFLOPs per 128-token sequence")
print(f"fine-tuned validation accuracy (numpy/scipy vs standard-library docstrings; chance 50%): "
      f"{tuned['extra_state']['best']:.1f}%")
PY
