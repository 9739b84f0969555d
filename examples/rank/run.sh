#!/usr/bin/env bash
# Table 1 at CPU scale: Kendall's tau of SPOS, MAGIC-T, MAGIC-A and MAGIC-AT
# super-nets (several seeds each) against the same children trained stand-alone
# (several seeds each, whose agreement is the ceiling), plus the MAGIC-AT
# ablations: each of the alignment's rules switched back to the first
# implementation, one at a time, and the lambda schedule.
# Needs the demo's data (bash scripts/setup.sh). Every step is skipped when its
# output exists, so a rerun continues where it stopped.
# The super-nets are hydra multiruns of examples/config/rank_cpu.yaml (a method's seeds at once, through
# hydra's submitit launcher), the children 'fairseq-magic rank train' jobs; --launcher slurm sends both to
# Slurm (--partition P), one GPU per run.
#   bash examples/rank/run.sh [--children 40] [--child-seeds 1,2] [--supernet-seeds 1,2,3]
#                             [--supernet-updates 2000] [--child-updates 2000] [--jobs 2] [--no-ablations]
#                             [--launcher local|slurm] [--partition P]
#                             [--steps 1,2,3,4] [--data data/default/bin] [--out checkpoints/rank]
#                             [--sweep gradual-k|anchor-top-p|align-batch-fraction|fair|fair-step|few-shot|align-lambda|budget]
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
#   fair-step: SPOS, FairNAS (fixed step), FairNAS's old defect (--fair-step last-child), SPOS with
#     FairNAS's accumulation (equal forwards) and SPOS on a quarter of the forwards: why the defect ranked better.
#   few-shot: few-shot super-nets beside SPOS at equal forwards: a one-shot warm-up of half the updates, split
#     by 'fairseq-magic few-shot' (the layer whose candidates' gradients agree least, 2 groups), then the 2
#     sub-super-nets a quarter of the updates each (one hydra multirun of the seeds per sub-super-net); each
#     child scored by its own sub-super-net. The warm-up alone is reported too (half the forwards).
# Point OUT/children at an existing ground truth (a symlink) to reuse it.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
. .venv/bin/activate
CHILDREN=40 CHILD_SEEDS=1,2 NET_SEEDS=1,2,3 NET_UPDATES=2000 CHILD_UPDATES=2000 JOBS=2 ABLATIONS=1 STEPS=1,2,3,4 SWEEP=""
OUT=checkpoints/rank DATA=data/default/bin LAUNCHER=local PARTITION=""
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
        --launcher) LAUNCHER=$2; shift 2 ;;
        --partition) PARTITION=$2; shift 2 ;;
        *) echo "usage: $0 [--children M] [--child-seeds S,..] [--supernet-seeds S,..] [--supernet-updates N]" \
                "[--child-updates N] [--jobs J] [--no-ablations] [--steps 1,2,3,4] [--data DIR] [--out DIR]" \
                "[--sweep NAME] [--launcher local|slurm] [--partition P]" >&2
           exit 2 ;;
    esac
done
case "$LAUNCHER" in
    local) LAUNCH=(hydra/launcher=submitit_local +run_config=local) CHILD_LAUNCH=(--max-parallel "$JOBS") ;;
    slurm) LAUNCH=(hydra/launcher=submitit_slurm +run_config=slurm_1g common.cpu=false ${PARTITION:+hydra.launcher.partition=$PARTITION})
           CHILD_LAUNCH=(--launcher slurm --gpus-per-job 1 ${PARTITION:+--slurm-partition "$PARTITION"}) ;;
    *) echo "fairseq-magic: error: unknown --launcher '$LAUNCHER' (known: local, slurm)" >&2; exit 2 ;;
esac
[ -f "$DATA/dict.txt" ] || { echo "fairseq-magic: error: run 'bash scripts/setup.sh' first (no $DATA)" >&2; exit 1; }
step() { [[ ",$STEPS," == *",$1,"* ]]; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # JOBS trainings side by side, one thread each
# A small space: 6 layers of {MHA4, FFN, CONV3, CONV5}, hidden 64, 64 tokens; the super-nets' settings are
# examples/config/rank_cpu.yaml, the children's the same as fairseq-train options:
COMMON="--tokens-per-sample 64 --batch-size 16 --optimizer adam --adam-betas (0.9,0.98) --weight-decay 0.01 \
--lr 1e-3 --lr-scheduler polynomial_decay --warmup-updates 30 --cpu --num-workers 0 \
--log-format simple --log-interval 100 --no-epoch-checkpoints"
[ "$LAUNCHER" = slurm ] && COMMON=${COMMON/ --cpu/}
# Each method: hydra overrides of rank_cpu.yaml.
# MAGIC-A: the paper's lambda, aligned at H_2 and H_4 (every 2 layers, not the final H_6), after a warm-up
# of a third of the run; the first anchor is the best of 100 children, checked every 50 updates on 256
# sentences by loss.
ALIGN="task.align_lambda=0.5 task.align_every=2 task.align_warmup_epochs=0 \
task.align_warmup_updates=$((NET_UPDATES / 3)) task.anchor_eval_interval=50 task.score_sentences=256 task.anchor_metric=loss"
T="task.sampler=gradual task.gradual_k=1"
METHODS=("spos|task.sampler=uniform" "magic_t|$T" "magic_a|task.sampler=uniform $ALIGN" "magic_at|$T $ALIGN")
if [ "$ABLATIONS" = 1 ]; then
    METHODS+=(
        "at_random_anchor|$T $ALIGN task.anchor_init_children=0"   # 1. first anchor: a random child
        "at_any_margin|$T $ALIGN task.anchor_replace_z=0"          # 2. replaced on any improvement
        "at_train_eval|$T $ALIGN task.align_dropout=train-eval"    # 3. child's states with dropout
        "at_final_layer|$T $ALIGN task.align_final_layer=true"     # 4. the final layer aligned too
        "at_lambda_decay|$T $ALIGN task.align_lambda_schedule=linear-decay task.align_decay_fraction=0.25"
    )
fi

case "$SWEEP" in
    "") ;;
    gradual-k) METHODS=("k1|task.sampler=gradual task.gradual_k=1" "k2|task.sampler=gradual task.gradual_k=2"
                        "k4|task.sampler=gradual task.gradual_k=4" "k6|task.sampler=gradual task.gradual_k=6") ;;
    anchor-top-p)
        METHODS=("spos|task.sampler=uniform" "best|task.sampler=uniform $ALIGN")
        for p in 0 10 30 50 70 90; do
            METHODS+=("p$p|task.sampler=uniform $ALIGN task.anchor_policy=top-p task.anchor_top_p=$p task.anchor_top_r=10")
        done ;;
    align-batch-fraction) METHODS=("f1|$T $ALIGN" "f0.5|$T $ALIGN task.align_batch_fraction=0.5"
                                   "f0.25|$T $ALIGN task.align_batch_fraction=0.25") ;;
    fair|budget)
        FW="task.sampler=fair-gradual task.gradual_k=1"
        # FairNAS: 4 children (one window) per update, one micro-batch each; a quarter of the updates, so
        # that every super-net trains the same 2000 x 16 sentences
        FAIRNAS="task.sampler=fair optimization.update_freq=[4] optimization.max_update=$((NET_UPDATES / 4)) \
lr_scheduler.total_num_update=$((NET_UPDATES / 4))"
        METHODS=("spos|task.sampler=uniform" "fairnas|$FAIRNAS" "magic_t|$T" "fair_gradual|$FW")
        # and two ablations that split FairNAS's two changes to SPOS: fairness alone (one child per update, a
        # window spans 4 updates) and accumulation alone (SPOS's one child per update, 4 micro-batches a step)
        [ "$SWEEP" = fair ] && METHODS+=("magic_a|task.sampler=uniform $ALIGN" "magic_at|$T $ALIGN"
                                         "magic_at_fair|$FW $ALIGN" "fair_windows|task.sampler=fair"
                                         "spos_accumulated|${FAIRNAS/task.sampler=fair /task.sampler=uniform }") ;;
    fair-step)
        # FairNAS's step and what made its defective variant rank better: every super-net trains the same
        # NET_UPDATES x 16 sentences; the 4-micro-batch ones take a quarter of the updates
        ACC="optimization.update_freq=[4] optimization.max_update=$((NET_UPDATES / 4)) \
lr_scheduler.total_num_update=$((NET_UPDATES / 4))"
        METHODS=("spos|task.sampler=uniform"                                     # one child, one step per 16
                 "fairnas|task.sampler=fair $ACC"                                 # the fixed step: the window's operators
                 "fairnas_last_child|task.sampler=fair task.fair_step=last-child $ACC"  # the old defect
                 "spos_accumulated|task.sampler=uniform $ACC"                    # one child for 4 micro-batches
                 # a quarter of the forwards: every operator takes as few steps as under the old defect
                 "spos_quarter|task.sampler=uniform optimization.max_update=$((NET_UPDATES / 4)) \
lr_scheduler.total_num_update=$((NET_UPDATES / 4))") ;;
    few-shot)
        # the warm-up and its sub-super-nets run on one schedule of WARM + (NET_UPDATES - WARM) / 2 updates
        WARM=$((NET_UPDATES / 2)) SUB_END=$((NET_UPDATES / 2 + NET_UPDATES / 4))
        METHODS=("spos|task.sampler=uniform"
                 "spos_quarter|task.sampler=uniform optimization.max_update=$((NET_UPDATES / 4)) \
lr_scheduler.total_num_update=$((NET_UPDATES / 4))"
                 "few_shot_warmup|task.sampler=uniform optimization.max_update=$WARM lr_scheduler.total_num_update=$SUB_END") ;;
    align-lambda)
        FW="task.sampler=fair-gradual task.gradual_k=1"
        METHODS=("spos|task.sampler=uniform")
        for l in 0.5 2 8; do METHODS+=("l$l|task.sampler=uniform ${ALIGN/task.align_lambda=0.5/task.align_lambda=$l}"); done
        for l in 2 8; do METHODS+=("at_fair_l$l|$FW ${ALIGN/task.align_lambda=0.5/task.align_lambda=$l}"); done ;;
    *) echo "fairseq-magic: error: unknown --sweep '$SWEEP' (known: gradual-k, anchor-top-p, align-batch-fraction," \
            "fair, fair-step, few-shot, align-lambda, budget)" >&2
       exit 2 ;;
esac
TRAIN_DATA=$DATA  # what the super-nets train on
if [ "$SWEEP" = anchor-top-p ] && step 1; then
    [ -f "$OUT/data/shard4/train.idx" ] || python examples/sweeps/shard.py "$DATA" "$OUT/data" --shards 5 >/dev/null
    TRAIN_DATA=$(echo "$OUT"/data/shard{0,1,2,3,4} | tr ' ' :)
fi

supernets() {  # name overrides...: the method's seeds not yet done, as one hydra multirun (OUT/name/seedS$SUB)
    local name=$1 seed todo=() budget=() sub=${SUB:-}; shift
    for seed in ${NET_SEEDS//,/ }; do [ -f "$OUT/$name/seed$seed$sub/done" ] || todo+=("$seed"); done
    [ ${#todo[@]} -gt 0 ] || return 0
    [[ " $* " == *" optimization.max_update="* ]] \
        || budget=("optimization.max_update=$NET_UPDATES" "lr_scheduler.total_num_update=$NET_UPDATES")
    # the plugin's task options are not in fairseq's schema when hydra composes: '++' sets them all the same
    local overrides=("${@/#task./++task.}")
    mkdir -p "$OUT/$name"
    if ! fairseq-hydra-train -m --config-dir examples/config --config-name rank_cpu "task.data=$TRAIN_DATA_ABS" \
            "common.user_dir=$PWD/fairseq_magic" "common.seed=$(IFS=,; echo "${todo[*]}")" hydra.job.name=train \
            "dataset.validate_interval_updates=$((NET_UPDATES / 4))" "${budget[@]}" "${overrides[@]}" "${LAUNCH[@]}" \
            "hydra.sweep.dir=$(realpath "$OUT/$name")" "hydra.sweep.subdir=seed\${common.seed}$sub" \
            > "$OUT/$name/sweep${sub//\//_}.log" 2>&1; then
        echo "fairseq-magic: error: super-net $name$sub: $(grep -v -e '^Set the environment' -e '^$' \
            "$OUT/$name/sweep${sub//\//_}.log" | tail -1) (log: $OUT/$name/sweep${sub//\//_}.log)" >&2
        return 1
    fi
    for seed in "${todo[@]}"; do
        touch "$OUT/$name/seed$seed$sub/done"
        echo "super-net $name$sub seed $seed: $(grep -c -E 'anchor (replaced|now)' "$OUT/$name/seed$seed$sub/train.log" \
            || true) anchor replacements"
    done
}
TRAIN_DATA_ABS=$(for d in ${TRAIN_DATA//:/ }; do realpath "$d"; done | paste -sd:)

# 1. super-nets: each method's seeds at once (local: side by side, one thread each; Slurm: every method at once)
if step 1; then
    PIDS=()
    for m in "${METHODS[@]}"; do
        # shellcheck disable=SC2086
        if [ "$LAUNCHER" = slurm ]; then supernets "${m%%|*}" ${m#*|} & PIDS+=($!); else supernets "${m%%|*}" ${m#*|}; fi
    done
    for pid in "${PIDS[@]}"; do wait "$pid"; done  # set -e: the first failed method stops here
fi

# 1b. few-shot: each seed's warm-up split, then each sub-super-net as one multirun of the seeds, resuming in the
# folder the split wrote (OUT/few_shot/seedS/subG)
if [ "$SWEEP" = few-shot ] && step 1; then
    for seed in ${NET_SEEDS//,/ }; do
        [ -f "$OUT/few_shot/seed$seed/split.json" ] && continue
        fairseq-magic few-shot --out "$OUT/few_shot/seed$seed" --groups 2 --cpu --no-progress-bar \
            --checkpoint "$OUT/few_shot_warmup/seed$seed/checkpoint_last.pt" > "$OUT/few_shot_warmup/seed$seed/split.txt" \
            2> "$OUT/few_shot_warmup/seed$seed/split.log"
        echo "seed $seed: $(grep -m1 '^split ' "$OUT/few_shot_warmup/seed$seed/split.txt")"
    done
    for group in 0 1; do
        SUB=/sub$group supernets few_shot task.sampler=uniform "optimization.max_update=$SUB_END" \
            "lr_scheduler.total_num_update=$SUB_END"
    done
fi

# 2. the children, trained stand-alone once per child seed
first_seed=${NET_SEEDS%%,*} first=${METHODS[0]%%|*}
step 2 && { [ -f "$OUT/children/children.json" ] || fairseq-magic rank sample \
    --checkpoint "$OUT/$first/seed$first_seed/checkpoint_last.pt" --out "$OUT/children" --children "$CHILDREN" --seed 1
fairseq-magic rank train --dir "$OUT/children" --data "$DATA" --seeds "$CHILD_SEEDS" "${CHILD_LAUNCH[@]}" --train-args \
    "$COMMON --total-num-update $CHILD_UPDATES --max-update $CHILD_UPDATES --log-interval 500"; }

# 3. Kendall's tau of every super-net; methods compared with the first (SPOS, k1, f1); the ceiling printed beside
LABELS=() CKPTS=()
for m in "${METHODS[@]}"; do
    for seed in ${NET_SEEDS//,/ }; do LABELS+=("${m%%|*}"); CKPTS+=("$OUT/${m%%|*}/seed$seed/checkpoint_last.pt"); done
done
if [ "$SWEEP" = fair-step ] && [ "$(echo "$NET_SEEDS" | tr ',' '\n' | wc -l)" -ge 5 ]; then
    # the ensembles of 4 quarter-length SPOS super-nets: row i leaves seed i out (so rows share members)
    for left in ${NET_SEEDS//,/ }; do
        members=()
        for seed in ${NET_SEEDS//,/ }; do
            [ "$seed" = "$left" ] || members+=("$OUT/spos_quarter/seed$seed/checkpoint_last.pt")
        done
        LABELS+=(spos_quarter_x4) CKPTS+=("$(IFS=+; echo "${members[*]:0:4}")")
    done
fi
if [ "$SWEEP" = few-shot ]; then  # each seed's sub-super-nets as one estimator
    for seed in ${NET_SEEDS//,/ }; do
        LABELS+=(few_shot) CKPTS+=("$OUT/few_shot/seed$seed/sub0/checkpoint_last.pt+$OUT/few_shot/seed$seed/sub1/checkpoint_last.pt")
    done
fi
step 3 && { mkdir -p "$OUT/table1"; fairseq-magic rank correlate --dir "$OUT/children" --out "$OUT/table1" \
    --labels "$(IFS=,; echo "${LABELS[*]}")" --checkpoints "${CKPTS[@]}" --sentences 256 --cpu \
    | tee "$OUT/table1/table.txt"; }

# 4. interference (Fig. 2c): SPOS against the anchor-aligned super-net of the first seed
step 4 && [ -z "$SWEEP" ] && { mkdir -p "$OUT/interference"; fairseq-magic interference \
    --checkpoint "$OUT/spos/seed$first_seed/checkpoint_last.pt" --compare "$OUT/magic_a/seed$first_seed/checkpoint_last.pt" \
    --labels SPOS,MAGIC-A --layers 0,1 --max-m 4 --repeats 10 --sentences 64 --cpu --out "$OUT/interference" \
    | tee "$OUT/interference/table.txt"; }
exit 0
