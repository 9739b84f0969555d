"""Rank correlation between super-net estimates and stand-alone training (Sec. 5.2,
Table 1).

1. ``sample``: M children drawn uniformly with a seed (or read from a list),
   one architecture file each, plus ``children.json``.
2. ``train``: the ground truth, each child trained from scratch once per
   seed (analysis/ground_truth.py, as jobs on this machine or on Slurm). The
   agreement between the seeds (Kendall's tau of the same children trained
   twice, ``seed_agreement``) is the ceiling no super-net can be expected to
   pass.
3. ``correlate``: each super-net scores every child with its shared weights
   (estimate = negative validation loss, as in the paper) and Kendall's tau
   (with its p-value) and Spearman's rho against the ground truth are computed
   with scipy. Several super-nets per method (seeds) are summarised by the mean
   and standard deviation of tau, and each method is compared with the first
   by Welch's t-test over seeds, a t-test paired by seed (the same seed gives
   the same data order), and a bootstrap over children.

   Beside tau, what a search actually uses, the top of the ranking
   (``top_of_ranking``): the true rank of the child the super-net ranks first,
   how many of its top 5 are in the true top 5, and the regret (the ground
   truth of its first child against the truly best one's). And how fairly each
   super-net was trained (training/training_share.py, from its search state):
   ``share_sd``, ``adjacent_share_sd``, and the Spearman correlation between a
   child's over-training and the residual of its estimate.
"""

import json
import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import stats

from ..errors import MagicError
from ..space import Child, SearchSpace, load_child, save_child
from ..streams import STREAM_RANK, rng_for
from ..training.samplers import distinct_children
from .figures import pyplot, save


def correlation(estimates: Sequence[float], truths: Sequence[float]) -> Dict[str, float]:
    """Kendall's tau (and p-value) and Spearman's rho (and p-value); higher = better on both sides."""
    if len(estimates) != len(truths):
        raise MagicError(f"cannot correlate {len(estimates)} estimates with {len(truths)} ground-truth values")
    if len(estimates) < 3:
        raise MagicError(f"rank correlation needs at least 3 children, got {len(estimates)}")
    tau = stats.kendalltau(estimates, truths)
    rho = stats.spearmanr(estimates, truths)
    return {"tau": float(tau.statistic), "tau_p": float(tau.pvalue), "rho": float(rho.statistic), "rho_p": float(rho.pvalue)}


def sample_children(space: SearchSpace, seed: int, count: int, out_dir: str) -> List[str]:
    """``count`` distinct uniform children as architecture files; returns their names."""
    if count > space.num_children:
        raise MagicError(f"the space has only {space.num_children} children, {count} were asked for")
    return write_children(space, distinct_children(space, rng_for(seed, STREAM_RANK), count), out_dir)


def write_children(space: SearchSpace, children: Sequence[Child], out_dir: str) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    names = [f"child{i:03d}" for i in range(len(children))]
    for name, child in zip(names, children):
        save_child(os.path.join(out_dir, f"{name}.json"), space, child)
    with open(os.path.join(out_dir, "children.json"), "w") as f:
        json.dump({name: space.format(c) for name, c in zip(names, children)}, f, indent=1)
    return names


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a child's name: one file name in the folder, no path


def read_children(out_dir: str):
    """(space, {name: child}) of a sampled directory; children.json must list plain file names (a name
    such as '../x' or '/tmp/x' would read and write outside the folder)."""
    path = os.path.join(out_dir, "children.json")
    if not os.path.isfile(path):
        raise MagicError(f"no children.json in {out_dir} (run 'fairseq-magic rank sample' first)")
    try:
        with open(path, "rb") as f:
            names = json.loads(f.read())
    except (ValueError, RecursionError) as err:
        raise MagicError(f"{path} is not valid JSON: {str(err).splitlines()[0] if str(err) else err!r}") from None
    if not isinstance(names, (dict, list)) or not names:  # 'rank sample' writes {name: architecture}
        raise MagicError(f"{path} must name the children: a non-empty JSON object (name: architecture) or list")
    names = list(names)
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise MagicError(f"{path} names the child {json.dumps(name)}: a child's name is a file name in "
                             f"{out_dir} (letters, digits, '_', '-', '.'), without a folder")
    if len(set(names)) != len(names):
        raise MagicError(f"{path} names a child twice")
    space, children = None, {}
    for name in names:
        space, children[name] = load_child(os.path.join(out_dir, f"{name}.json"), space)
    return space, children


# Ground-truth metrics, each turned into "higher is better" for correlation.
GROUND_TRUTHS = {"valid_loss": -1.0, "finetune_accuracy": 1.0}


TOP = 5  # the "top k" of top_of_ranking


def top_of_ranking(estimates: Sequence[float], truths: Sequence[float], top: int = TOP) -> Dict[str, float]:
    """What a search takes from a ranking (both sides higher = better):
    ``best_true_rank``, the true rank (1 = best) of the child estimated best
    (ties in the truth count in its favour); ``top_overlap``, how many of the
    ``top`` estimated best are among the ``top`` truly best; ``regret``, the
    truly best child's ground truth minus that of the child estimated best
    (>= 0, in the ground truth's unit: bits of validation loss, or accuracy)."""
    est, gt = np.asarray(estimates, dtype=float), np.asarray(truths, dtype=float)
    first = int(np.argmax(est))
    top = min(top, len(gt))
    overlap = len(set(np.argsort(-est, kind="stable")[:top]) & set(np.argsort(-gt, kind="stable")[:top]))
    return {"best_true_rank": int((gt > gt[first]).sum()) + 1, "top_overlap": overlap,
            "regret": float(gt.max() - gt[first])}


def over_training_correlation(estimates: Sequence[float], truths: Sequence[float],
                              over: Sequence[float]) -> Dict[str, float]:
    """Spearman's rho (and p) between each child's over-training (training/training_share.py)
    and the residual of its estimate after a least-squares line on the ground
    truth: positive when children of over-trained operators are over-estimated."""
    est, gt = np.asarray(estimates, dtype=float), np.asarray(truths, dtype=float)
    slope, intercept = np.polyfit(gt, est, 1)
    rho = stats.spearmanr(over, est - (slope * gt + intercept))
    return {"over_training_rho": float(rho.statistic), "over_training_p": float(rho.pvalue)}


def seed_agreement(truth: Dict[str, Dict], names: Sequence[str], metric: str) -> Optional[Dict[str, float]]:
    """The ground truth's own noise: Kendall's tau between stand-alone runs of the
    same children with different seeds (mean over pairs of seeds), the mean
    absolute difference between two runs of a child, and the span of the
    children's mean values. None when fewer than two seeds are recorded."""
    # children still waiting for their second seed (a run in progress) are left out
    by_seed = [b for b in (truth[n].get(f"{metric}_by_seed", {}) for n in names) if len(b) > 1]
    seeds = sorted(set.intersection(*(set(b) for b in by_seed)) if by_seed else set(), key=int)
    if len(seeds) < 2 or len(by_seed) < 3:
        return None
    runs = np.array([[b[s] for s in seeds] for b in by_seed])  # (children, seeds)
    pairs = [(i, j) for i in range(len(seeds)) for j in range(i + 1, len(seeds))]
    taus = [stats.kendalltau(runs[:, i], runs[:, j]).statistic for i, j in pairs]
    # a seed also draws the validation masks, which shifts every child alike: the offset is reported apart
    centred = runs - runs.mean(axis=0)
    diffs = [np.abs(centred[:, i] - centred[:, j]).mean() for i, j in pairs]
    offsets = [abs(runs[:, i].mean() - runs[:, j].mean()) for i, j in pairs]
    means = runs.mean(axis=1)
    return {"tau": float(np.mean(taus)), "seeds": len(seeds), "children": len(by_seed),
            "mean_abs_diff": float(np.mean(diffs)), "seed_offset": float(np.mean(offsets)),
            "span": float(means.max() - means.min())}


def compare_methods(estimates: Dict[str, List[Sequence[float]]], truth: Sequence[float],
                    bootstrap: int = 2000, seed: int = 0) -> Dict[str, Dict[str, float]]:
    """Per method (label -> one estimate list per super-net seed): the mean and
    standard deviation of Kendall's tau over its super-nets; and for every
    method after the first (the baseline) the difference of mean tau, Welch's
    t-test over super-nets (p, two-sided), and a bootstrap over children (the
    same resampled children for every super-net): a 95% interval of the
    difference and the share of resamples in which the method is not better."""
    truth = np.asarray(truth, dtype=float)
    labels = list(estimates)
    runs = {label: [np.asarray(e, dtype=float) for e in estimates[label]] for label in labels}

    def mean_tau(label: str, idx: np.ndarray) -> float:
        return float(np.mean([stats.kendalltau(e[idx], truth[idx]).statistic for e in runs[label]]))

    taus = {label: [stats.kendalltau(e, truth).statistic for e in runs[label]] for label in labels}
    out = {label: {"mean": float(np.mean(t)), "sd": float(np.std(t, ddof=1)) if len(t) > 1 else 0.0,
                   "n": len(t), "taus": [float(x) for x in t]} for label, t in taus.items()}
    for label in labels:
        tops = [top_of_ranking(e, truth) for e in runs[label]]
        for key in ("best_true_rank", "top_overlap", "regret"):
            values = [t[key] for t in tops]
            out[label][key] = float(np.mean(values))
            out[label][key + "_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    if len(labels) < 2:
        return out
    base = labels[0]
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, len(truth), len(truth)) for _ in range(bootstrap)]
    base_boot = np.array([mean_tau(base, idx) for idx in resamples])
    for label in labels[1:]:
        row = out[label]
        row["diff"] = row["mean"] - out[base]["mean"]
        if len(taus[label]) > 1 and len(taus[base]) > 1:
            row["welch_p"] = float(stats.ttest_ind(taus[label], taus[base], equal_var=False).pvalue)
        if len(taus[label]) == len(taus[base]) > 1:  # seed i of each method: paired
            row["paired_p"] = float(stats.ttest_rel(taus[label], taus[base]).pvalue)
        boot = np.array([mean_tau(label, idx) for idx in resamples]) - base_boot
        boot = boot[np.isfinite(boot)]
        row["boot_lo"], row["boot_hi"] = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
        row["boot_p"] = float((boot <= 0).mean())
    return out


CEILING_FLOOR = 0.5  # below this, the ground truth's seeds disagree too much to rank children by it


def format_ceiling(agreement: Optional[Dict[str, float]], metric: str, truth: Optional[Dict[str, Dict]] = None,
                   names: Sequence[str] = ()) -> str:
    """The ground truth's own noise, printed beside every rank table; a line starting with
    WARNING when it cannot rank (seeds agreeing below CEILING_FLOOR, or no spread at all)."""
    if agreement is None:
        twice = [n for n in names if len((truth or {}).get(n, {}).get(f"{metric}_by_seed", {})) > 1]
        if len(twice) < 2:
            return f"ceiling ({metric}): unknown, one seed per child (train with --seeds 1,2 to measure it)"
        return (f"ceiling ({metric}): unknown, only {len(twice)} children have two seeds of {metric} (3 are needed; "
                "rank train resumes the others)")
    if not np.isfinite(agreement["tau"]):
        return (f"WARNING: ceiling ({metric}): no Kendall's tau, the {agreement['children']} children's {metric} is "
                "the same in some seed: the ground truth ranks nothing" + (
                    " (every child at the majority class? raise the fine-tuning --lr: docs/search-export-finetune.md)"
                    if metric == "finetune_accuracy" else ""))
    line = (f"ceiling ({metric}): the same {agreement['children']} children trained with {agreement['seeds']} seeds "
            f"agree with Kendall's tau {agreement['tau']:.3f} (mean |difference| {agreement['mean_abs_diff']:.4f} "
            f"after a common offset of {agreement['seed_offset']:.4f}; span of the means {agreement['span']:.4f})")
    if agreement["tau"] < CEILING_FLOOR:
        line = (f"WARNING: {line}; below {CEILING_FLOOR} the ground truth cannot rank these children, so no tau "
                "against it means anything: train them longer (rank train's --train-args --max-update), on more data, "
                "or with more seeds")
    return line


def write_report(truth: Dict[str, Dict], names: Sequence[str], labels: Sequence[str], checkpoints: Sequence[str],
                 estimates: Sequence[Sequence[float]], ground_truth: str, out: str,
                 training: Optional[Sequence[Optional[Dict]]] = None) -> str:
    """Table 1 from each super-net's ``estimates`` of the children ``names`` (higher
    is better): a scatter plot per super-net, ``rank.json``, and the returned
    table (tau, rho and the top of the ranking per super-net; their mean and sd
    per method, each compared with the first; the ceiling). ``training`` gives,
    per super-net, its training shares (``share_sd``, ``adjacent_share_sd``, and
    ``over_training``, one value per child; None for a checkpoint that has no
    counts)."""
    plt = pyplot()
    os.makedirs(out, exist_ok=True)
    gt = [GROUND_TRUTHS[ground_truth] * truth[n][ground_truth] for n in names]  # higher is better
    rows = []
    training = list(training or [None] * len(checkpoints))
    for i, (label, checkpoint, est) in enumerate(zip(labels, checkpoints, estimates)):
        rows.append(dict(correlation(est, gt), **top_of_ranking(est, gt), label=label, checkpoint=checkpoint,
                         estimates=list(est)))
        if training[i] is not None:
            rows[-1].update(share_sd=training[i]["share_sd"], adjacent_share_sd=training[i]["adjacent_share_sd"])
            if np.ptp(training[i]["over_training"]) > 0:  # no correlation when every child was trained alike
                rows[-1].update(over_training_correlation(est, gt, training[i]["over_training"]))
        fig, ax = plt.subplots(figsize=(4.4, 3.8))
        ax.scatter(gt, est, s=14)
        ax.set_xlabel("stand-alone: " + ("- validation loss (bits/token)" if ground_truth == "valid_loss"
                                         else "fine-tuned accuracy (%)"))
        ax.set_ylabel("super-net estimate: - loss (bits/token)")
        r = rows[-1]
        ax.set_title(f"{label}: tau {r['tau']:.2f} (p {r['tau_p']:.1g}), rho {r['rho']:.2f} (p {r['rho_p']:.1g}), "
                     f"n = {len(gt)}", fontsize=9)
        fig.tight_layout()
        suffix = f"_{list(labels[:i]).count(label) + 1}" if list(labels).count(label) > 1 else ""
        save(fig, os.path.join(out, f"scatter_{label}{suffix}"))
        plt.close(fig)
    grouped: Dict[str, List[Sequence[float]]] = {}
    for row in rows:
        grouped.setdefault(row["label"], []).append(row["estimates"])
    methods = compare_methods(grouped, gt)
    ceiling = seed_agreement(truth, names, ground_truth)
    with open(os.path.join(out, "rank.json"), "w") as f:
        json.dump({"children": list(names), "ground_truth": gt, "ceiling": ceiling, "supernets": rows,
                   "methods": methods}, f, indent=1)
    unit = "bits" if ground_truth == "valid_loss" else "points"
    lines = [f"Kendall's tau over {len(names)} children (estimate: negative shared-weight validation loss); "
             f"first: the true rank of the child ranked first; top{TOP}: of its top {TOP}, how many are in the "
             f"true top {TOP}; regret: its first child's {ground_truth} against the truly best ({unit}); share_sd, "
             f"adj_sd: the spread of the training shares; over rho: Spearman of a child's over-training with its "
             f"estimate's residual",
             f"{'super-net':<16}{'tau':>8}{'p':>10}{'rho':>8}{'p':>10}{'first':>7}{'top' + str(TOP):>6}{'regret':>8}"
             f"{'share_sd':>10}{'adj_sd':>8}{'over rho':>10}  checkpoint"]

    def optional(row, key, width, fmt):
        return (format(row[key], fmt) if key in row else "-").rjust(width)

    for r in rows:
        lines.append(f"{r['label']:<16}{r['tau']:>8.3f}{r['tau_p']:>10.2g}{r['rho']:>8.3f}{r['rho_p']:>10.2g}"
                     f"{r['best_true_rank']:>7}{r['top_overlap']:>6}{r['regret']:>8.3f}"
                     f"{optional(r, 'share_sd', 10, '.3f')}{optional(r, 'adjacent_share_sd', 8, '.3f')}"
                     f"{optional(r, 'over_training_rho', 10, '+.2f')}  {r['checkpoint']}")
    if any(m["n"] > 1 for m in methods.values()) or len(methods) > 1:
        base = next(iter(methods))
        lines += ["", f"{'method':<16}{'n':>3}{'mean tau':>10}{'sd':>8}{'vs ' + base:>12}{'Welch p':>9}"
                      f"{'paired p':>9}{'bootstrap 95% CI':>20}{'P(<=)':>7}{'first (sd)':>13}{'top' + str(TOP):>11}"
                      f"{'regret':>15}"]
        for label, m in methods.items():
            line = f"{label:<16}{m['n']:>3}{m['mean']:>10.3f}{m['sd']:>8.3f}"
            if "diff" in m:
                ci = f"[{m['boot_lo']:+.3f}, {m['boot_hi']:+.3f}]"
                p = f"{m['welch_p']:.2g}" if "welch_p" in m else "-"
                paired = f"{m['paired_p']:.2g}" if "paired_p" in m else "-"
                line += f"{m['diff']:>+12.3f}{p:>9}{paired:>9}{ci:>20}{m['boot_p']:>7.3f}"
            else:
                line += f"{'':>57}"
            line += (f"{m['best_true_rank']:>7.1f} ({m['best_true_rank_sd']:.1f}){m['top_overlap']:>5.1f} "
                     f"({m['top_overlap_sd']:.1f}){m['regret']:>8.3f} ({m['regret_sd']:.3f})")
            lines.append(line)
    note = format_ceiling(ceiling, ground_truth, truth, names)
    lines.append(note)
    if note.startswith("WARNING"):
        lines.insert(0, note)  # before the table, too: its taus are measured against noise
    return "\n".join(lines)
