"""Plot a sweep (``examples/sweeps/run.sh NAME``): the swept setting
against rank correlation and interference (Fig. 3 at CPU scale).

Super-nets are labelled by the setting's letter and value (``k2``: MAGIC-T's
k, Fig. 3a; ``p30``: the top-p anchor's p, Fig. 3b/c; ``f0.25``: MAGIC-AT's
--align-batch-fraction; ``l2``: MAGIC-A's lambda); other labels (``spos``, ``best``) are references,
drawn as lines. For each: Kendall's tau of its super-nets against the ground
truth (mean and standard deviation over seeds, from OUT/table1/rank.json) and
the interference logged during training (``interference_cos``: the cosine of
two children's gradients on a shared operator, mean over the samples at
updates >= --from, with its standard error). The trend of tau over the setting
is a least-squares line through every super-net's tau, with its p-value.
Writes OUT/sweep.png and .pdf and prints the table.

    python examples/sweeps/plot.py checkpoints/sweeps/gradual_k [--from 700]
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

from scipy import stats

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from fairseq_magic.analysis.figures import pyplot, save  # noqa: E402
from fairseq_magic.analysis.interference import training_samples  # noqa: E402

SETTING = re.compile(r"^([a-z])([0-9.]+)$")
AXES = {"k": "k (layers changed per update)", "p": "anchor: the child at the top p% (r = 10)",
        "f": "fraction of each batch aligned", "l": "alignment strength lambda (MAGIC-A)"}


def interference(log_paths, start: int):
    """Mean, standard error and count of the interference samples at updates >= ``start``."""
    values = [cos for path in log_paths for update, cos in training_samples(path).items() if update >= start]
    if not values:
        return float("nan"), float("nan"), 0
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.mean(values), se, len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the sweep's --out (checkpoints/sweeps/NAME)")
    parser.add_argument("--from", dest="start", type=int, default=700, help="first update of the interference mean")
    args = parser.parse_args()
    rank = json.load(open(os.path.join(args.out, "table1", "rank.json")))
    rows, references, letters = [], [], set()
    for label, method in rank["methods"].items():
        cos = interference(sorted(glob.glob(os.path.join(args.out, label, "seed*", "train.log"))), args.start)
        setting = SETTING.match(label)
        if setting:
            letters.add(setting.group(1))
            rows.append((float(setting.group(2)), label, method, cos))
        else:
            references.append((label, method, cos))
    if len(letters) != 1:
        sys.exit(f"plot.py: error: expected labels of one setting (k2, p30, f0.5, ...), found {sorted(letters)}")
    letter = letters.pop()
    rows.sort()
    ceiling = rank.get("ceiling", {}).get("tau")
    print(f"{'super-nets':<10} {'tau mean':>9} {'sd':>6}  {'per seed':<30} {'interference':>12} {'se':>6} {'samples':>8}")
    for label, method, (cos, se, n) in [(r[1], r[2], r[3]) for r in rows] + references:
        taus = " / ".join(f"{t:.3f}" for t in method["taus"])
        print(f"{label:<10} {method['mean']:>9.3f} {method['sd']:>6.3f}  {taus:<30} {cos:>12.4f} {se:>6.4f} {n:>8}")
    xs = [x for x, _, method, _ in rows for _ in method["taus"]]
    trend = stats.linregress(xs, [t for *_, method, _ in rows for t in method["taus"]]) if len(set(xs)) > 1 else None
    if trend is not None:
        print(f"trend: tau = {trend.intercept:.3f} {trend.slope:+.5f} x {letter} over {len(xs)} super-nets "
              f"(slope se {trend.stderr:.5f}, p {trend.pvalue:.2g})")
    if ceiling is not None:
        print(f"ceiling (the ground truth's own seeds agree with tau): {ceiling:.3f}")

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = [r[0] for r in rows]
    left.errorbar(x, [r[2]["mean"] for r in rows], yerr=[r[2]["sd"] for r in rows], marker="o", capsize=3)
    right.errorbar(x, [r[3][0] for r in rows], yerr=[r[3][1] for r in rows], marker="o", capsize=3, color="C1")
    for value, _, method, _ in rows:
        left.scatter([value] * len(method["taus"]), method["taus"], color="grey", s=10, zorder=3)
    for i, (label, method, (cos, _, _)) in enumerate(references):
        left.axhline(method["mean"], color=f"C{i + 2}", linestyle=":", linewidth=1.2, label=f"{label} {method['mean']:.2f}")
        right.axhline(cos, color=f"C{i + 2}", linestyle=":", linewidth=1.2, label=label)
    if ceiling is not None:
        left.axhline(ceiling, color="grey", linestyle="--", linewidth=1, label=f"ceiling {ceiling:.2f}")
    left.set(xlabel=AXES.get(letter, letter), ylabel="Kendall's tau", xticks=x,
             title=f"rank correlation, {len(rank['children'])} children (mean, sd; dots: seeds)")
    right.set(xlabel=AXES.get(letter, letter), ylabel="gradient cosine on a shared operator", xticks=x,
              title=f"interference, updates >= {args.start} (mean, se)")
    for ax in (left, right):
        ax.title.set_fontsize(10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    save(fig, os.path.join(args.out, "sweep"))
    print(f"figure: {os.path.join(args.out, 'sweep')}.png/.pdf")


if __name__ == "__main__":
    main()
