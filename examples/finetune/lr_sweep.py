"""Fine-tune one pre-trained model at several learning rates and seeds with
fairseq's sentence_prediction recipe; print dev accuracy per learning rate.

    python examples/finetune/lr_sweep.py --restore-file child/model.pt --data data/topics/bin-default \\
        --out checkpoints/lr-sweep/demo --lrs 1e-5,1e-4,1e-3 --seeds 1,2 --jobs 2

Each run is the README's fine-tuning command (Adam, polynomial decay with 6%
warm-up, weight decay 0.1, batch 16, --max-epoch epochs) with only --lr and
--seed changed; the dev accuracy of a run is its best validation (once per
epoch), as fairseq's checkpoint_best.pt would keep. Runs go side by side with
OMP_NUM_THREADS=1 each (--jobs); each run's log is kept under --out; a run whose
log is complete is not run again.
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ACCURACY = re.compile(r"valid on 'valid' subset .*?\| accuracy ([0-9.]+)")
TRAIN_LOSS = re.compile(r"\| INFO \| train \| epoch \d+ \| loss ([0-9.]+)")


def command(args, lr: str, seed: str, updates: int) -> list:
    warmup = max(1, round(0.06 * updates))
    return [
        sys.executable, "-m", "fairseq_cli.train", args.data, "--user-dir", "fairseq_magic",
        "--restore-file", args.restore_file, "--reset-optimizer", "--reset-dataloader", "--reset-meters",
        "--task", "sentence_prediction", "--criterion", "sentence_prediction", "--num-classes", str(args.num_classes),
        "--arch", "magic_child", *(["--child-arch", args.child_arch] if args.child_arch else []), "--max-positions", str(args.max_positions), "--shorten-method", "truncate",
        "--init-token", "0", "--separator-token", "2", "--batch-size", str(args.batch_size),
        "--required-batch-size-multiple", "1", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
        "--adam-eps", "1e-06", "--weight-decay", "0.1", "--clip-norm", "0.0", "--lr", lr,
        "--lr-scheduler", "polynomial_decay", "--total-num-update", str(updates), "--warmup-updates", str(warmup),
        "--max-epoch", str(args.max_epoch), "--no-save", "--cpu", "--num-workers", "0", "--log-format", "simple",
        "--log-interval", "1000", "--seed", seed,
    ]


def run_one(args, lr: str, seed: str, updates: int) -> dict:
    log_path = os.path.join(args.out, f"lr{lr}_seed{seed}.log")
    if not (os.path.isfile(log_path) and "done training" in open(log_path).read()):
        with open(log_path, "w") as log:
            subprocess.run(command(args, lr, seed, updates), stdout=log, stderr=subprocess.STDOUT, check=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = open(log_path).read()
    accuracies = [float(a) for a in ACCURACY.findall(text)]
    losses = [float(x) for x in TRAIN_LOSS.findall(text)]
    return {"lr": lr, "seed": seed, "accuracy": max(accuracies), "per_epoch": accuracies,
            "final_train_loss": losses[-1] if losses else math.nan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restore-file", required=True, help="a magic_child checkpoint (an export, a retrained child)")
    parser.add_argument("--data", required=True, help="a binarised sentence_prediction folder (input0/, label/)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--child-arch", default="", help="only if the checkpoint does not carry its architecture")
    parser.add_argument("--lrs", default="1e-5,2e-5,1e-4,3e-4,1e-3,3e-3,1e-2")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--max-positions", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-epoch", type=int, default=3)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from fairseq.data import data_utils

    train_rows = len(data_utils.load_indexed_dataset(os.path.join(args.data, "input0", "train"), None))
    updates = math.ceil(train_rows / args.batch_size) * args.max_epoch
    runs = [(lr, seed) for lr in args.lrs.split(",") for seed in args.seeds.split(",")]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda r: run_one(args, r[0], r[1], updates), runs))
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump({"restore_file": args.restore_file, "data": args.data, "updates": updates, "runs": results}, f, indent=1)
    print(f"{args.restore_file} on {args.data}: {train_rows} train rows, {updates} updates ({args.max_epoch} epochs)")
    print(f"{'lr':>8}  {'dev accuracy (mean, sd over seeds)':>36}  per seed")
    for lr in args.lrs.split(","):
        acc = [r["accuracy"] for r in results if r["lr"] == lr]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(f"{lr:>8}  {statistics.mean(acc):>29.1f} +- {sd:4.1f}  {' / '.join(f'{a:.1f}' for a in acc)}")


if __name__ == "__main__":
    main()
