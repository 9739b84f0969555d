#!/usr/bin/env bash
# Table 1 at CPU scale: Kendall's tau of SPOS, MAGIC-T, MAGIC-A and MAGIC-AT
# super-nets (several seeds each) against the same children trained stand-alone
# (several seeds each, whose agreement is the ceiling), plus the MAGIC-AT
# ablations: each of the alignment's rules switched back to the first
# implementation, one at a time, and the lambda schedule.
# Needs the demo's data (bash scripts/setup.sh). Every step is skipped when its
# output exists, so a rerun continues where it stopped.
#   bash examples/rank/run.sh [--children 40] [--child-seeds 1,2] [--supernet-seeds 1,2,3]
#                             [--supernet-updates 2000] [--child-updates 2000] [--jobs 2] [--no-ablations]
#                             [--steps 1,2,3,4] [--data data/default/bin] [--out checkpoints/rank]
#                             [--sweep gradual-k|anchor-top-p|align-batch-fraction|fair|align-lambda|budget]
# Steps: 1 super-nets, 2 children (stand-alone), 3 rank correlation, 4 interference.
# Sweeps, instead of Table 1 (examples/sweeps/run.sh NAME runs one and plots it):
#   gradual-k: Fig. 3a, MAGIC-T with k = 1, 2, 4 and N = 6 layers changed per update (no alignment).
#   anchor-top-p: Fig. 3b/c, MAGIC-A whose anchor is the child ranked at the top p% of 100 scored at each
#     epoch end (p = 0, 10, 30, 50, 70, 90; r = 10), beside SPOS and the default anchor rule; the training
#     split is cut into 5 shards (examples/sweeps/shard.py), one per epoch, so the policy acts every ~250 updates.
#   align-batch-fraction: MAGIC-AT with its alignment term on all, half and a quarter of each batch's
#     sentences (what --align-dropout clean costs).
#   fair: the fair samplers beside the paper's methods: SPOS, FairNAS (--sampler fair --update-freq 4, a
#     quarter of the updates: the same forwards), MAGIC-T, the fair gradual walk, MAGIC-A, MAGIC-AT and
#     MAGIC-AT on the fair walk; ablations: FairNAS's windows without accumulation (--update-freq 1), and
#     SPOS with FairNAS's accumulation (--update-freq 4, a quarter of the updates).
#   align-lambda: MAGIC-A at lambda 0.5, 2 and 8, and MAGIC-AT on the fair walk at 2 and 8, beside SPOS.
#   budget: SPOS, FairNAS, MAGIC-T and the fair walk (give --supernet-updates 8000, say).
# Point OUT/children at an existing ground truth (a symlink) to reuse it.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
. .venv/bin/activate
CHILDREN=40 CHILD_SEEDS=1,2 NET_SEEDS=1,2,3 NET_UPDATES=2000 CHILD_UPDATES=2000 JOBS=2 ABLATIONS=1 STEPS=1,2,3,4 SWEEP=""
OUT=checkpoints/rank DATA=data/default/bin
while [ $# -gt 0 ]; do
    case "$1" in
        --children) CHILDREN=$2; shift 2 ;;
        --child-seeds) CHILD_SEEDS=$2; shift 2 ;;
        --supernet-seeds) NET_SEEDS=$2; shift 2 ;;
        --supernet-updates) NET_UPDATES=$2; shift 2 ;;
        --child-updates) CHILD_UPDATES=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        --no-ablations) ABLATIONS=0; shift ;;
        --steps) STEPS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --sweep) SWEEP=$2; shift 2 ;;
        *) echo "usage: $0 [--children M] [--child-seeds S,..] [--supernet-seeds S,..] [--supernet-updates N]" \
                "[--child-updates N] [--jobs J] [--no-ablations] [--steps 1,2,3,4] [--data DIR] [--out DIR]" \
                "[--sweep gradual-k|anchor-top-p|align-batch-fraction]" >&2; exit 2 ;;
    esac
done
[ -f "$DATA/dict.txt" ] || { echo "fairseq-magic: error: run 'bash scripts/setup.sh' first (no $DATA)" >&2; exit 1; }
step() { [[ ",$STEPS," == *",$1,"* ]]; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # JOBS trainings side by side, one thread each
# A small space: 6 layers of {MHA4, FFN, CONV3, CONV5}, hidden 64, 64 tokens.
SPACE="--arch magic_supernet_tiny --supernet-layers 6 --encoder-embed-dim 64 --encoder-ffn-embed-dim 256"
COMMON="--tokens-per-sample 64 --batch-size 16 --optimizer adam --adam-betas (0.9,0.98) --weight-decay 0.01 \
--lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 30 --cpu --num-workers 0 \
--log-format simple --log-interval 100 --no-epoch-checkpoints"
# MAGIC-A: the paper's lambda, aligned at H_2 and H_4 (every 2 layers, not the final H_6), after a warm-up
# of a third of the run; the first anchor is the best of 100 children, checked every 50 updates on 256
# sentences by loss.
ALIGN="--align-lambda 0.5 --align-every 2 --align-warmup-epochs 0 --align-warmup-updates $((NET_UPDATES / 3)) \
--anchor-eval-interval 50 --score-sentences 256 --anchor-metric loss"
T="--sampler gradual --gradual-k 1"
METHODS=("spos|--sampler uniform" "magic_t|$T" "magic_a|--sampler uniform $ALIGN" "magic_at|$T $ALIGN")
if [ "$ABLATIONS" = 1 ]; then
    METHODS+=(
        "at_random_anchor|$T $ALIGN --anchor-init-children 0"   # 1. first anchor: a random child
        "at_any_margin|$T $ALIGN --anchor-replace-z 0"          # 2. replaced on any improvement
        "at_train_eval|$T $ALIGN --align-dropout train-eval"    # 3. child's states with dropout
        "at_final_layer|$T $ALIGN --align-final-layer"          # 4. the final layer aligned too
        "at_lambda_decay|$T $ALIGN --align-lambda-schedule linear-decay --align-decay-fraction 0.25"
    )
fi

case "$SWEEP" in
    "") ;;
    gradual-k) METHODS=("k1|--sampler gradual --gradual-k 1" "k2|--sampler gradual --gradual-k 2"
                        "k4|--sampler gradual --gradual-k 4" "k6|--sampler gradual --gradual-k 6") ;;
    anchor-top-p)
        METHODS=("spos|--sampler uniform" "best|--sampler uniform $ALIGN")
        for p in 0 10 30 50 70 90; do
            METHODS+=("p$p|--sampler uniform $ALIGN --anchor-policy top-p --anchor-top-p $p --anchor-top-r 10")
        done ;;
    align-batch-fraction) METHODS=("f1|$T $ALIGN" "f0.5|$T $ALIGN --align-batch-fraction 0.5"
                                   "f0.25|$T $ALIGN --align-batch-fraction 0.25") ;;
    fair|budget)
        FW="--sampler fair-gradual --gradual-k 1"
        # FairNAS: 4 children (one window) per update, one micro-batch each; a quarter of the updates, so
        # that every super-net trains the same 2000 x 16 sentences
        FAIRNAS="--sampler fair --update-freq 4 --max-update $((NET_UPDATES / 4)) --total-num-update $((NET_UPDATES / 4))"
        METHODS=("spos|--sampler uniform" "fairnas|$FAIRNAS" "magic_t|$T" "fair_gradual|$FW")
        # and two ablations that split FairNAS's two changes to SPOS: fairness alone (one child per update, a
        # window spans 4 updates) and accumulation alone (SPOS's one child per update, 4 micro-batches a step)
        [ "$SWEEP" = fair ] && METHODS+=("magic_a|--sampler uniform $ALIGN" "magic_at|$T $ALIGN"
                                         "magic_at_fair|$FW $ALIGN" "fair_windows|--sampler fair"
                                         "spos_accumulated|${FAIRNAS/--sampler fair/--sampler uniform}") ;;
    align-lambda)
        FW="--sampler fair-gradual --gradual-k 1"
        METHODS=("spos|--sampler uniform")
        for l in 0.5 2 8; do METHODS+=("l$l|--sampler uniform ${ALIGN/--align-lambda 0.5/--align-lambda $l}"); done
        for l in 2 8; do METHODS+=("at_fair_l$l|$FW ${ALIGN/--align-lambda 0.5/--align-lambda $l}"); done ;;
    *) echo "fairseq-magic: error: unknown --sweep '$SWEEP' (known: gradual-k, anchor-top-p, align-batch-fraction," \
            "fair, align-lambda, budget)" >&2
       exit 2 ;;
esac
TRAIN_DATA=$DATA  # what the super-nets train on
if [ "$SWEEP" = anchor-top-p ] && step 1; then
    [ -f "$OUT/data/shard4/train.idx" ] || python examples/sweeps/shard.py "$DATA" "$OUT/data" --shards 5 >/dev/null
    TRAIN_DATA=$(echo "$OUT"/data/shard{0,1,2,3,4} | tr ' ' :)
fi

supernet() {  # name seed flags...
    local name=$1 seed=$2; shift 2
    local dir="$OUT/$name/seed$seed"
    [ -f "$dir/done" ] && return 0
    mkdir -p "$dir"
    # shellcheck disable=SC2068,SC2086
    fairseq-train "$TRAIN_DATA" --user-dir fairseq_magic --task magic_masked_lm --criterion magic_mlm $SPACE $COMMON \
        --seed "$seed" --max-update "$NET_UPDATES" --total-num-update "$NET_UPDATES" \
        --validate-interval-updates "$((NET_UPDATES / 4))" --interference-interval 100 $@ \
        --save-dir "$dir" > "$dir/train.log" 2>&1 && touch "$dir/done"
    echo "super-net $name seed $seed: $(grep -c -E 'anchor (replaced|now)' "$dir/train.log" || true) anchor replacements"
}
export -f supernet
export OUT TRAIN_DATA SPACE COMMON NET_UPDATES

# 1. super-nets, JOBS at a time: the four methods' seeds first, then the ablations'
queue() { for seed in ${NET_SEEDS//,/ }; do for m in "$@"; do printf '%s\0' "${m%%|*} $seed ${m#*|}"; done; done; }
step 1 && { queue "${METHODS[@]:0:4}"; queue "${METHODS[@]:4}"; } | xargs -0 -P "$JOBS" -I{} bash -c 'supernet {}'

# 2. the children, trained stand-alone once per child seed
first_seed=${NET_SEEDS%%,*} first=${METHODS[0]%%|*}
step 2 && { [ -f "$OUT/children/children.json" ] || fairseq-magic rank sample \
    --checkpoint "$OUT/$first/seed$first_seed/checkpoint_last.pt" --out "$OUT/children" --children "$CHILDREN" --seed 1
fairseq-magic rank train --dir "$OUT/children" --data "$DATA" --seeds "$CHILD_SEEDS" --jobs "$JOBS" --train-args \
    "$COMMON --total-num-update $CHILD_UPDATES --max-update $CHILD_UPDATES --log-interval 500"; }

# 3. Kendall's tau of every super-net; methods compared with the first (SPOS, k1, f1); the ceiling printed beside
LABELS=() CKPTS=()
for m in "${METHODS[@]}"; do
    for seed in ${NET_SEEDS//,/ }; do LABELS+=("${m%%|*}"); CKPTS+=("$OUT/${m%%|*}/seed$seed/checkpoint_last.pt"); done
done
step 3 && { mkdir -p "$OUT/table1"; fairseq-magic rank correlate --dir "$OUT/children" --out "$OUT/table1" \
    --labels "$(IFS=,; echo "${LABELS[*]}")" --checkpoints "${CKPTS[@]}" --sentences 256 --cpu \
    | tee "$OUT/table1/table.txt"; }

# 4. interference (Fig. 2c): SPOS against the anchor-aligned super-net of the first seed
step 4 && [ -z "$SWEEP" ] && { mkdir -p "$OUT/interference"; fairseq-magic interference \
    --checkpoint "$OUT/spos/seed$first_seed/checkpoint_last.pt" --compare "$OUT/magic_a/seed$first_seed/checkpoint_last.pt" \
    --labels SPOS,MAGIC-A --layers 0,1 --max-m 4 --repeats 10 --sentences 64 --cpu --out "$OUT/interference" \
    | tee "$OUT/interference/table.txt"; }
exit 0
