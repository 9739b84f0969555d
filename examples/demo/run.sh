#!/usr/bin/env bash
# The demo, end to end on the CPU: train a small SPOS super-net, print its
# children's validation losses under the shared weights, search it under a
# parameter limit, export the found child with its inherited weights, and
# fine-tune it with fairseq's sentence_prediction recipe on a labelled data set
# built from the installed packages. Every step is an ordinary command that can
# be copied; each is skipped when its output exists, so a second run reuses
# what the first one built. The console shows each step, its progress and the
# results; fairseq's full output goes to checkpoints/demo-<name>/demo.log.
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

LOG=$SAVE/demo.log
mkdir -p "$SAVE"
echo "fairseq-magic demo; fairseq's full output: $LOG"
STEPS=8 N=0

# step WHAT COMMAND...: one console line per step, the command's output in the log.
step() {
    local what=$1 start=$SECONDS; shift
    N=$((N + 1))
    printf '[%d/%d] %s ...' "$N" "$STEPS" "$what"
    echo "=== [$N/$STEPS] $what: $*" >>"$LOG"
    if "$@" >>"$LOG" 2>&1; then
        printf ' done (%ds)\n' $((SECONDS - start))
    else
        printf ' failed; the end of %s:\n' "$LOG"; tail -n 15 "$LOG"; exit 1
    fi
}
# skip WHAT: a step whose output exists from an earlier run.
skip() { N=$((N + 1)); printf '[%d/%d] %s: reused from an earlier run\n' "$N" "$STEPS" "$1"; }
# train WHAT TOTAL COMMAND...: a fairseq-train step, its progress on one console line.
train() {
    local what=$1 total=$2 start=$SECONDS; shift 2
    N=$((N + 1))
    echo "=== [$N/$STEPS] $what: $*" >>"$LOG"
    printf '[%d/%d] %s ...' "$N" "$STEPS" "$what"
    if "$@" 2>&1 | tee -a "$LOG" | awk -v head="[$N/$STEPS] $what" -v total="$total" '
            /\| train_inner \|/ { match($0, /num_updates=[0-9]+/); u = substr($0, RSTART + 12, RLENGTH - 12)
                                  match($0, /loss=[0-9.]+/); loss = substr($0, RSTART + 5, RLENGTH - 5)
                                  printf "\r%s ... update %d/%d, train loss %s   ", head, u, total, loss; fflush() }
            /valid on .valid. subset/ { if (match($0, /\| accuracy [0-9.]+/)) { a = substr($0, RSTART + 11, RLENGTH - 11)
                                  printf "\r%s ... epoch %d, dev accuracy %s%%   ", head, ++epoch, a; fflush() } }'; then
        printf '\r[%d/%d] %s ... done (%ds)%40s\n' "$N" "$STEPS" "$what" $((SECONDS - start)) ""
    else
        printf '\nfailed; the end of %s:\n' "$LOG"; tail -n 15 "$LOG"; exit 1
    fi
}

prepare_data() {
    fairseq-magic spm --data "$DATA/text" --out "$DATA/spm" --vocab-size 8000 &&
    fairseq-preprocess --only-source \
        --trainpref "$DATA/spm/train.spm" --validpref "$DATA/spm/valid.spm" --testpref "$DATA/spm/test.spm" \
        --destdir "$DATA/bin" --workers 2
}
if [ -f "$DATA/text/train.txt" ]; then skip "corpus"; else
    step "building the corpus ($DATA/text)" fairseq-magic corpus --out "$DATA/text" ${CORPUS:+--corpus "$CORPUS"}; fi
if [ -f "$DATA/bin/dict.txt" ]; then skip "sentencepiece model and binarised data"; else
    step "training sentencepiece (8000 pieces), encoding and binarising ($DATA/bin)" prepare_data; fi

# SPOS super-net training: a uniformly sampled child per update. (Skipped when a
# previous run finished: resuming a finished run would still take one more step.)
if [ -f "$SAVE/done-$MAX_UPDATE" ]; then skip "super-net training"; else
    train "training the SPOS super-net (magic_supernet_tiny)" "$MAX_UPDATE" fairseq-train "$DATA/bin" \
        --user-dir fairseq_magic --task magic_masked_lm --criterion magic_mlm --arch magic_supernet_tiny \
        --sampler uniform --valid-children 4 \
        --tokens-per-sample 128 --batch-size 16 \
        --optimizer adam --adam-betas '(0.9, 0.98)' --weight-decay 0.01 --clip-norm 1.0 \
        --lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 30 --total-num-update "$MAX_UPDATE" \
        --max-update "$MAX_UPDATE" --validate-interval-updates 100 --save-interval-updates 100 \
        --keep-interval-updates 1 --no-epoch-checkpoints --cpu --num-workers 0 --no-progress-bar \
        --log-format simple --log-interval 25 --seed 1 --save-dir "$SAVE"
    touch "$SAVE/done-$MAX_UPDATE"
fi

# The validation loss of several children under the shared weights.
step "validating six children under the shared weights" fairseq-validate "$DATA/bin" --user-dir fairseq_magic \
    --task magic_masked_lm --path "$SAVE/checkpoint_last.pt" --valid-children 6 --batch-size 16 --cpu --num-workers 0
grep -E "validation child [0-9]+:" "$LOG" | tail -n 6 | sed -E 's/.*validation child ([0-9]+): (.*)/      child \1: \2/' \
    | paste -d' ' - <(grep "valid on" "$LOG" | tail -n 1 | grep -oE "child[0-9]+_loss [0-9.]+" | sed -E 's/.*_loss /loss /')

# Search the super-net: evolution under a parameter limit (the whole model).
if [ -f "$SEARCH/best.json" ]; then skip "search"; else
    step "searching by evolution under 1.7M parameters" fairseq-magic search \
        --checkpoint "$SAVE/checkpoint_last.pt" --out "$SEARCH" --no-progress-bar \
        --population 16 --generations 5 --parents 4 --sentences 128 --max-params 1.7e6 --seed 1; fi

# Export the found child as a stand-alone RoBERTa-compatible model (inherited weights).
if [ -f "$CHILD/model.pt" ]; then skip "export"; else
    step "exporting the found child ($CHILD)" fairseq-magic export --checkpoint "$SAVE/checkpoint_last.pt" \
        --arch "$SEARCH/best.json" --out "$CHILD/model.pt" --sentencepiece-model "$DATA/spm/spm.model"; fi

# A labelled sentence set in GLUE's layout: numpy/scipy vs standard-library docstrings.
prepare_topics() {
    { [ -f "$TOPICS/raw/train.label" ] || fairseq-magic topics --out "$TOPICS/raw" --per-label 1000; } &&
    fairseq-magic encode --spm "$DATA/spm/spm.model" "$TOPICS/raw/train.input0" "$TOPICS/raw/dev.input0" &&
    fairseq-preprocess --only-source --trainpref "$TOPICS/raw/train.input0.spm" \
        --validpref "$TOPICS/raw/dev.input0.spm" --destdir "$TOPICS/bin-$NAME/input0" \
        --srcdict "$DATA/bin/dict.txt" --workers 2 &&
    fairseq-preprocess --only-source --trainpref "$TOPICS/raw/train.label" --validpref "$TOPICS/raw/dev.label" \
        --destdir "$TOPICS/bin-$NAME/label" --workers 2
}
if [ -f "$TOPICS/bin-$NAME/label/dict.txt" ]; then skip "labelled data set"; else
    step "building a labelled data set ($TOPICS)" prepare_topics; fi

# Fine-tune exactly as fairseq's RoBERTa GLUE recipe does (sentence_prediction); the
# architecture comes from the exported checkpoint; lr 1e-3 suits a child this small (README).
if [ -f "$FINETUNE/done" ]; then skip "fine-tuning"; else
    train "fine-tuning the child (sentence_prediction, 3 epochs)" 300 fairseq-train "$TOPICS/bin-$NAME" \
        --user-dir fairseq_magic --restore-file "$CHILD/model.pt" --reset-optimizer --reset-dataloader --reset-meters \
        --task sentence_prediction --criterion sentence_prediction --num-classes 2 \
        --arch magic_child --max-positions 128 --shorten-method truncate \
        --init-token 0 --separator-token 2 --batch-size 16 --required-batch-size-multiple 1 \
        --optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-06 --weight-decay 0.1 --clip-norm 0.0 \
        --lr 1e-3 --lr-scheduler polynomial_decay --total-num-update 300 --warmup-updates 18 --max-epoch 3 \
        --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric --no-epoch-checkpoints \
        --cpu --num-workers 0 --no-progress-bar --log-format simple --log-interval 25 --seed 1 --save-dir "$FINETUNE"
    touch "$FINETUNE/done"
fi

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
