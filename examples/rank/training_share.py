"""How evenly a super-net's training visited the (layer, operator) pairs, and
whether children made of over-trained operators are over-estimated.

For every super-net of a rank run (``examples/rank/run.sh``; its ``table1/rank.json``),
the sampler of its method is replayed from its seed for ``--updates`` updates
(every rank and a resumed run draw the same children, so this is the training's
own sequence), giving each pair's share of training relative to a fair share.
Then, per super-net: the Spearman correlation between a child's summed
over-training and the residual of its estimate after a linear fit on the
ground truth.

    python examples/rank/training_share.py checkpoints/rank4k [--updates 2000]
"""

import argparse
import json
import os

import numpy as np
from scipy import stats

from fairseq_magic.samplers import build_sampler
from fairseq_magic.space import load_child

GRADUAL = ("magic_t", "magic_at", "at_")  # run.sh's names of the methods that use --sampler gradual


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the --out of examples/rank/run.sh")
    parser.add_argument("--updates", type=int, default=2000, help="super-net updates (run.sh --supernet-updates)")
    args = parser.parse_args()
    rank = json.load(open(os.path.join(args.out, "table1", "rank.json")))
    children = json.load(open(os.path.join(args.out, "children", "children.json")))
    space, _ = load_child(os.path.join(args.out, "children", "child000.json"))
    names, truth = rank["children"], np.array(rank["ground_truth"])
    print(f"{'super-net':<18}{'seed':>5}{'sd of share':>13}{'Spearman':>10}{'p':>9}")
    for row in rank["supernets"]:
        seed = int(os.path.basename(os.path.dirname(row["checkpoint"]))[len("seed"):])
        gradual = row["label"].startswith(GRADUAL)
        sampler = build_sampler("gradual" if gradual else "uniform", space, seed)
        counts, child = np.zeros((space.num_layers, space.num_candidates)), None
        for update in range(args.updates):
            child = sampler(update, child)
            counts[np.arange(space.num_layers), list(child)] += 1
        share = counts / args.updates * space.num_candidates - 1  # 0: a fair share
        estimates = np.array(row["estimates"])
        slope, intercept = np.polyfit(truth, estimates, 1)
        residual = estimates - (slope * truth + intercept)
        over = [sum(share[layer, c] for layer, c in enumerate(space.parse(children[n]))) for n in names]
        rho, p = stats.spearmanr(over, residual)
        print(f"{row['label']:<18}{seed:>5}{share.std():>13.3f}{rho:>+10.3f}{p:>9.2g}")


if __name__ == "__main__":
    main()
