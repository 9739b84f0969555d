"""Rank correlation between super-net estimates and stand-alone training (Sec. 5.2,
Table 1).

1. ``sample``: M children drawn uniformly with a seed (or read from a list),
   one architecture file each, plus ``children.json``.
2. ``train``: each child trained from scratch with ``fairseq-train --arch
   magic_child`` under one budget; child by child, resumable (a finished child
   is skipped, an interrupted one resumes from its checkpoint); its ground
   truth is the best validation masked-LM loss and, when a GLUE-format task is
   given, the best accuracy after fine-tuning with ``sentence_prediction``,
   recorded in ``truth.json``.
3. ``correlate``: each super-net scores every child with its shared weights
   (estimate = negative validation loss, as in the paper) and Kendall's tau
   (with its p-value) and Spearman's rho against the ground truth are computed
   with scipy.
"""

import json
import os
import subprocess
import sys
from typing import Dict, List, Sequence

from scipy import stats

from .errors import MagicError
from .samplers import rng_for, uniform_child
from .space import Child, SearchSpace, load_child, save_child

STREAM_RANK = 7


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
    rng = rng_for(seed, STREAM_RANK)
    children: List[Child] = []
    while len(children) < count:
        child = uniform_child(space, rng)
        if child not in children:
            children.append(child)
    return write_children(space, children, out_dir)


def write_children(space: SearchSpace, children: Sequence[Child], out_dir: str) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    names = [f"child{i:03d}" for i in range(len(children))]
    for name, child in zip(names, children):
        save_child(os.path.join(out_dir, f"{name}.json"), space, child)
    with open(os.path.join(out_dir, "children.json"), "w") as f:
        json.dump({name: space.format(c) for name, c in zip(names, children)}, f, indent=1)
    return names


def read_children(out_dir: str):
    """(space, {name: child}) of a sampled directory."""
    path = os.path.join(out_dir, "children.json")
    if not os.path.isfile(path):
        raise MagicError(f"no children.json in {out_dir} (run 'fairseq-magic rank sample' first)")
    with open(path) as f:
        names = list(json.load(f))
    space, children = None, {}
    for name in names:
        space, children[name] = load_child(os.path.join(out_dir, f"{name}.json"), space)
    return space, children


# Ground-truth metrics, each turned into "higher is better" for correlation.
GROUND_TRUTHS = {"valid_loss": -1.0, "finetune_accuracy": 1.0}


def read_truth(out_dir: str) -> Dict[str, Dict[str, float]]:
    """{child: {metric: value}}: ``valid_loss`` (best stand-alone validation loss,
    bits) and, when fine-tuned, ``finetune_accuracy``."""
    path = os.path.join(out_dir, "truth.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        truth = json.load(f)
    # a plain number is a validation loss (the first format of this file)
    return {name: v if isinstance(v, dict) else {"valid_loss": float(v)} for name, v in truth.items()}


def _best(checkpoint: str) -> float:
    import torch

    # our own run's checkpoint: fairseq records the best validation metric in it
    return float(torch.load(checkpoint, map_location="cpu", weights_only=False)["extra_state"]["best"])


def _fairseq_train(name: str, cmd: List[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise MagicError(f"training {name} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def train_children(out_dir: str, data: str, train_args: Sequence[str], finetune_data: str = "",
                   finetune_args: Sequence[str] = (), log=print) -> Dict[str, Dict[str, float]]:
    """Train every child that has no ground truth yet: masked-LM pre-training from
    scratch, then (with ``finetune_data``) fairseq's sentence_prediction from it."""
    _, children = read_children(out_dir)
    truth = read_truth(out_dir)
    plugin = os.path.dirname(os.path.abspath(__file__))
    for i, name in enumerate(children):
        record = truth.get(name, {})
        if "valid_loss" in record and (not finetune_data or "finetune_accuracy" in record):
            continue
        arch = ["--user-dir", plugin, "--arch", "magic_child", "--child-arch", os.path.join(out_dir, f"{name}.json"),
                "--no-epoch-checkpoints"]
        pretrain = os.path.join(out_dir, "train", name)
        if "valid_loss" not in record:
            log(f"training child {name} ({i + 1}/{len(children)}) from scratch")
            _fairseq_train(name, [data, "--task", "masked_lm", "--criterion", "masked_lm", *arch,
                                  "--save-dir", pretrain, *train_args])
            record["valid_loss"] = _best(os.path.join(pretrain, "checkpoint_best.pt"))
        if finetune_data:
            finetune = os.path.join(out_dir, "finetune", name)
            log(f"fine-tuning child {name} ({i + 1}/{len(children)})")
            _fairseq_train(name, [
                finetune_data, "--task", "sentence_prediction", "--criterion", "sentence_prediction", *arch,
                "--restore-file", os.path.join(pretrain, "checkpoint_best.pt"), "--reset-optimizer",
                "--reset-dataloader", "--reset-meters", "--best-checkpoint-metric", "accuracy",
                "--maximize-best-checkpoint-metric", "--save-dir", finetune, *finetune_args,
            ])
            record["finetune_accuracy"] = _best(os.path.join(finetune, "checkpoint_best.pt"))
        truth[name] = record
        with open(os.path.join(out_dir, "truth.json"), "w") as f:
            json.dump(truth, f, indent=1)
        log(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()))
    return truth
