"""The ground truth of a rank correlation (Sec. 5.2): each child trained from
scratch, once per seed.

One job per (child, seed), run by jobs.py on this machine or as a Slurm array:
masked-LM pre-training with ``fairseq-train --arch magic_child`` under one
budget, then (with a GLUE-format task) fine-tuning with fairseq's
``sentence_prediction`` from it. A job writes its figures to
``results/NAME.seedS.json`` when it ends; the driver gathers them into
``truth.json`` as jobs finish: {child: {metric: mean over seeds,
metric_by_seed: {seed: value}}}, metrics ``valid_loss`` (best validation loss,
bits) and ``finetune_accuracy``. A rerun skips what is finished, resumes an
interrupted training from its ``checkpoint_last.pt`` (fairseq's own restore)
and submits a failed one again.
"""

import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import submitit

from .. import jobs
from ..errors import MagicError
from .rank_correlation import read_children

PLUGIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package: fairseq_magic/


METRICS = ("valid_loss", "finetune_accuracy")


def finite(value, where: str) -> float:
    """``value`` as a float: a JSON number that is neither NaN nor infinite, or one line naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MagicError(f"{where} must be a finite number, got {json.dumps(value, default=repr)[:60]}")
    return float(value)


def read_json(path: str):
    """A result file's JSON, or one line saying why it cannot be read."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except OSError as err:
        raise MagicError(f"cannot read {path}: {err.strerror}") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise MagicError(f"{path} is not valid JSON ({str(err).splitlines()[0] if str(err) else err!r}): "
                         f"remove it to measure again") from None


def read_truth(out_dir: str) -> Dict[str, Dict]:
    """{child: {metric: value}}: ``valid_loss`` (best stand-alone validation loss,
    bits) and, when fine-tuned, ``finetune_accuracy``, each the mean over the
    seeds in ``<metric>_by_seed`` ({seed: value}). Every value is checked: one line for a file that
    is not this format (truncated, NaN, a string where a number belongs)."""
    path = os.path.join(out_dir, "truth.json")
    if not os.path.isfile(path):
        return {}
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise MagicError(f"{path} must map each child's name to its results")
    truth = {}
    for name, record in saved.items():
        if not isinstance(record, dict):  # a plain number is a validation loss (the first format of this file)
            record = {"valid_loss": record}
        checked = {}
        for metric in METRICS:
            if metric in record:
                checked[metric] = finite(record[metric], f"{path}: {name}'s {metric}")
            by_seed = record.get(f"{metric}_by_seed")
            if by_seed is not None:
                if not isinstance(by_seed, dict):
                    raise MagicError(f"{path}: {name}'s {metric}_by_seed must map seeds to numbers")
                checked[f"{metric}_by_seed"] = {str(seed): finite(v, f"{path}: {name}'s {metric}, seed {seed}")
                                                for seed, v in by_seed.items()}
            elif metric in checked:  # from before seeds were recorded
                checked[f"{metric}_by_seed"] = {"1": checked[metric]}
        truth[name] = checked
    return truth


def _best(checkpoint: str) -> float:
    from ..checkpoint import torch_load

    # our own run's checkpoint: fairseq records the best validation metric in it
    return float(torch_load(checkpoint, map_location="cpu")["extra_state"]["best"])


def fairseq_train(argv: Sequence[str]) -> None:
    """``fairseq-train ARGV`` in this process (fairseq_cli.train's own steps), so that stopping the job
    stops the training; its log lines as fairseq-train prints them, on the job's standard output."""
    import logging

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli.train import main

    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                        level=logging.INFO, stream=sys.stdout, force=True)
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=list(argv))
    distributed_utils.call_main(convert_namespace_to_omegaconf(args), main)


class ChildTraining(submitit.helpers.Checkpointable):
    """One (child, seed) of the ground truth, as a job. Checkpointable: when Slurm preempts it or its time
    runs out, submitit requeues it with the same arguments and fairseq resumes from ``checkpoint_last.pt``."""

    def __init__(self, out_dir: str, name: str, seed: int, data: str, train_args: Sequence[str],
                 finetune_data: str = "", finetune_args: Sequence[str] = (), pretrain: bool = True):
        self.out_dir, self.name, self.seed, self.data = os.path.abspath(out_dir), name, seed, data
        self.train_args, self.finetune_data, self.finetune_args = list(train_args), finetune_data, list(finetune_args)
        self.pretrain = pretrain  # False: its masked-LM loss is in truth.json already, only fine-tuning is missing

    def result_path(self) -> str:
        return os.path.join(self.out_dir, "results", f"{self.name}.seed{self.seed}.json")

    def metrics(self) -> set:
        """What this job measures: a result file without all of it is from an earlier, smaller job."""
        return {m for m, asked in (("valid_loss", self.pretrain), ("finetune_accuracy", self.finetune_data)) if asked}

    def __call__(self) -> None:
        arch = ["--user-dir", PLUGIN, "--arch", "magic_child", "--child-arch",
                os.path.join(self.out_dir, f"{self.name}.json"), "--no-epoch-checkpoints"]
        pretrain = os.path.join(self.out_dir, "train", self.name, f"seed{self.seed}")
        results = {}
        if self.pretrain:
            fairseq_train([self.data, "--task", "masked_lm", "--criterion", "masked_lm", *arch, "--save-dir", pretrain,
                           *self.train_args, "--seed", str(self.seed)])
            results["valid_loss"] = _best(os.path.join(pretrain, "checkpoint_best.pt"))
        if self.finetune_data:
            finetune = os.path.join(self.out_dir, "finetune", self.name, f"seed{self.seed}")
            fairseq_train([
                self.finetune_data, "--task", "sentence_prediction", "--criterion", "sentence_prediction", *arch,
                "--restore-file", os.path.join(pretrain, "checkpoint_best.pt"), "--reset-optimizer",
                "--reset-dataloader", "--reset-meters", "--best-checkpoint-metric", "accuracy",
                "--maximize-best-checkpoint-metric", "--save-dir", finetune, *self.finetune_args,
                "--seed", str(self.seed),
            ])
            results["finetune_accuracy"] = _best(os.path.join(finetune, "checkpoint_best.pt"))
        os.makedirs(os.path.dirname(self.result_path()), exist_ok=True)
        jobs.write_json(self.result_path(), results)


def _job_name(name: str, seed: int) -> str:
    return f"{name}.seed{seed}"


def train_children(out_dir: str, data: str, train_args: Sequence[str], finetune_data: str = "",
                   finetune_args: Sequence[str] = (), seeds: Sequence[int] = (1,),
                   launch: Optional[jobs.LaunchOptions] = None, log=print, progress=None) -> Dict[str, Dict]:
    """Train every (child, seed) that has no ground truth yet, as jobs (``launch``: jobs.py's options,
    default one at a time on this machine); ``truth.json`` is rewritten as each ends. ``progress`` (a tqdm
    bar) is reset to the number of jobs and counts them. One line for the failed jobs, after the others ended."""
    _, children = read_children(out_dir)
    truth = read_truth(out_dir)
    todo: Dict[str, ChildTraining] = {}
    for name in children:
        record = truth.setdefault(name, {})
        for seed in seeds:
            have = {metric for metric in ("valid_loss", "finetune_accuracy")
                    if str(seed) in record.get(f"{metric}_by_seed", {})}
            if "valid_loss" not in have or (finetune_data and "finetune_accuracy" not in have):
                todo[_job_name(name, seed)] = ChildTraining(out_dir, name, seed, data, train_args, finetune_data,
                                                            finetune_args, pretrain="valid_loss" not in have)

    def collect(job_name: str) -> bool:
        job = todo[job_name]
        if not os.path.isfile(job.result_path()):
            return False
        results = read_json(job.result_path())
        if not isinstance(results, dict) or not job.metrics() <= set(results):
            return False
        results = {m: finite(v, f"{job.result_path()}: {m}") for m, v in results.items() if m in METRICS}
        record = truth[job.name]
        for metric, value in results.items():
            record.setdefault(f"{metric}_by_seed", {})[str(job.seed)] = value
            record[metric] = float(np.mean(list(record[f"{metric}_by_seed"].values())))
        jobs.write_json(os.path.join(out_dir, "truth.json"), truth, indent=1)
        log(f"child {job.name}, seed {job.seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
        return True

    for job_name in list(todo):  # ended while no driver was watching (a Slurm array, say)
        if collect(job_name):
            del todo[job_name]
    if todo:
        log(f"training {len(todo)} (child, seed) pairs: " + ", ".join(todo))
    failed: List[str] = jobs.run(todo, launch or jobs.LaunchOptions(), os.path.join(out_dir, "jobs"), collect,
                                 log=log, progress=progress, title="magic-ground-truth")
    if failed:
        raise MagicError(f"{len(failed)} of {len(todo)} trainings failed ({', '.join(failed)}; their logs are "
                         f"named above); run the same command again to retry them")
    return {name: record for name, record in truth.items() if record}
