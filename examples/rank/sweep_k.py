"""Fig. 3a at CPU scale: MAGIC-T's k (layers changed per update) against rank
correlation and interference, from ``examples/rank/run.sh --sweep gradual-k``.

For each k: Kendall's tau of its super-nets against the ground truth (mean and
standard deviation over seeds, from OUT/table1/rank.json), and the
interference logged during training (``interference_cos``: the cosine of two
children's gradients on a shared operator, mean over the samples at updates
>= --from, with its standard error). Writes OUT/sweep_k.png and .pdf and
prints the table.

    python examples/rank/sweep_k.py checkpoints/sweeps/gradual_k [--from 700]
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_magic.figures import pyplot, save  # noqa: E402

SAMPLE = re.compile(r"interference_cos=([-0-9.e]+).*num_updates=(\d+)")


def interference(log_paths, start: int):
    values = []
    for path in log_paths:
        with open(path) as f:
            values += [float(m.group(1)) for m in map(SAMPLE.search, f) if m and int(m.group(2)) >= start]
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.mean(values), se, len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the --out of run.sh --sweep gradual-k")
    parser.add_argument("--from", dest="start", type=int, default=700, help="first update of the interference mean")
    args = parser.parse_args()
    rank = json.load(open(os.path.join(args.out, "table1", "rank.json")))
    rows = []
    for label, method in rank["methods"].items():
        k = int(label.lstrip("k"))
        cos, se, n = interference(sorted(glob.glob(os.path.join(args.out, label, "seed*", "train.log"))), args.start)
        rows.append((k, method["mean"], method["sd"], method["taus"], cos, se, n))
    rows.sort()
    ceiling = rank.get("ceiling", {}).get("tau")
    print(f"{'k':>3} {'tau mean':>9} {'sd':>6}  {'per seed':<24} {'interference':>12} {'se':>6} {'samples':>8}")
    for k, mean, sd, taus, cos, se, n in rows:
        print(f"{k:>3} {mean:>9.3f} {sd:>6.3f}  {' / '.join(f'{t:.3f}' for t in taus):<24} {cos:>12.4f} {se:>6.4f} {n:>8}")
    if ceiling is not None:
        print(f"ceiling (the ground truth's own seeds agree with tau): {ceiling:.3f}")

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    ks = [r[0] for r in rows]
    left.errorbar(ks, [r[1] for r in rows], yerr=[r[2] for r in rows], marker="o", capsize=3)
    for k, _, _, taus, *_ in rows:
        left.scatter([k] * len(taus), taus, color="grey", s=10, zorder=3)
    if ceiling is not None:
        left.axhline(ceiling, color="grey", linestyle="--", linewidth=1, label=f"ceiling {ceiling:.2f}")
        left.legend(loc="lower right", fontsize=8)
    left.set(xlabel="k (layers changed per update)", ylabel="Kendall's tau", xticks=ks,
             title=f"rank correlation, {len(rank['children'])} children (mean, sd; dots: seeds)")
    right.errorbar(ks, [r[4] for r in rows], yerr=[r[5] for r in rows], marker="o", capsize=3, color="C1")
    right.set(xlabel="k (layers changed per update)", ylabel="gradient cosine on a shared operator", xticks=ks,
              title=f"interference, updates >= {args.start} (mean, se)")
    for ax in (left, right):
        ax.title.set_fontsize(10)
    fig.tight_layout()
    save(fig, os.path.join(args.out, "sweep_k"))
    print(f"figure: {os.path.join(args.out, 'sweep_k')}.png/.pdf")


if __name__ == "__main__":
    main()
