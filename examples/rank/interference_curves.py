"""Interference during super-net training, from the logs of examples/rank/run.sh.

Every super-net there logs ``interference_cos`` every 100 updates (one sample:
two children differing only in layer j+1, cosine of their gradients on a shared
operator of layer j; ``--interference-interval``). This script averages the
samples over seeds, per method, draws them against the update number and
prints the mean over the aligned phase (after the warm-up), with its standard
error over all samples.

    python examples/rank/interference_curves.py checkpoints/rank --methods spos,magic_a --from 700
"""

import argparse
import glob
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_magic.analysis.figures import pyplot  # noqa: E402
from fairseq_magic.analysis.interference import training_samples  # noqa: E402

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="the --out of examples/rank/run.sh")
    p.add_argument("--methods", default="spos,magic_t,magic_a,magic_at")
    p.add_argument("--from", dest="start", type=int, default=0, help="the mean is taken from this update on")
    p.add_argument("--out", default="", help="plot file (default: DIR/interference_training.png)")
    args = p.parse_args()
    fig, ax = pyplot().subplots(figsize=(5.5, 3.6))
    print(f"{'method':<16}{'seeds':>6}{'samples':>9}{'mean cos':>10}{'se':>8}   (updates >= {args.start})")
    for method in args.methods.split(","):
        runs = [training_samples(log) for log in sorted(glob.glob(os.path.join(args.dir, method, "seed*", "train.log")))]
        runs = [r for r in runs if r]
        if not runs:
            print(f"{method:<16}  no interference_cos in its logs")
            continue
        by_update = defaultdict(list)
        for run in runs:
            for update, cos in run.items():
                by_update[update].append(cos)
        updates = sorted(by_update)
        ax.plot(updates, [np.mean(by_update[u]) for u in updates], marker="o", ms=3, label=method)
        late = [c for u in updates if u >= args.start for c in by_update[u]]
        se = np.std(late, ddof=1) / np.sqrt(len(late)) if len(late) > 1 else float("nan")
        print(f"{method:<16}{len(runs):>6}{len(late):>9}{np.mean(late):>10.4f}{se:>8.4f}")
    ax.axvline(args.start, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("update")
    ax.set_ylabel("gradient cosine similarity on o_g\n(children differing in layer j+1)")
    ax.set_title("interference during training (higher = less), mean over seeds", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = args.out or os.path.join(args.dir, "interference_training.png")
    fig.savefig(out, dpi=130)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
