"""GLUE's raw task folders as the binarised folders fairseq's ``sentence_prediction`` reads.

The counterpart of fairseq's ``examples/roberta/preprocess_GLUE_tasks.sh`` for a
model pre-trained with this plugin: each task's TSV files (as GLUE's download
script lays them out) are split into ``input0`` (``input1``) and ``label``,
encoded with the pre-training sentencepiece model (or fastBPE codes) and
binarised with the pre-training ``dict.txt``:

    fairseq-magic glue-prep --glue-dir glue_data --model child/ --out glue-bin

writes ``glue-bin/RTE-bin/{input0,input1,label}`` and so on, the folders the
README's fine-tuning command takes. As in fairseq's script: ``dev`` becomes
the ``valid`` split (MNLI: ``dev_matched`` -> ``valid``, ``dev_mismatched`` ->
``valid1``; likewise ``test``/``test1``), the header line is dropped (CoLA's
train and dev files have none), QQP's rows without its six fields are dropped,
class labels get their own dictionary, and STS-B's scores are divided by 5
and kept as text (``label/<split>.label``, what ``--regression-target`` reads).

The label dictionary is ordered so that class index i is label i where the
labels are 0..K-1 (and sorted otherwise), not by frequency as
``fairseq-preprocess`` orders it: ``predict(...).argmax() == 1`` means label
``1`` on every data set, whichever label is the majority.
Test files carry no labels. WNLI, which fairseq's script leaves out, has RTE's
layout.
"""

import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import MagicError
from .corpus import read_text_lines, text_encoder

logger = logging.getLogger("fairseq_magic.data.glue")


@dataclass(frozen=True)
class TaskLayout:
    """Where one GLUE task keeps its inputs and labels (0-based TSV columns)."""

    name: str
    inputs: Tuple[int, ...]  # train and dev
    test_inputs: Tuple[int, ...]
    label: int  # train
    dev_label: Optional[int] = None  # dev, where it differs from train's (MNLI)
    num_classes: int = 2
    regression: bool = False  # STS-B: a similarity score in [0, 5]
    header: bool = True  # train and dev open with a header line (test files always do)
    num_fields: int = 0  # rows of train/dev with another number of fields are dropped (0: keep all)
    dev: Tuple[str, ...] = ("dev",)
    test: Tuple[str, ...] = ("test",)
    # fine-tuning, as fairseq's RoBERTa GLUE recipe sets it (examples/roberta/README.glue.md)
    batch_size: int = 32
    lr: float = 1e-5  # RoBERTa-base's: see suggested_lr for a smaller child
    report: str = ""  # the criterion's extra metric: report_mcc, report_acc_and_f1, report_pearson_and_spearman


TASKS: Dict[str, TaskLayout] = {t.name: t for t in (
    TaskLayout("CoLA", inputs=(3,), test_inputs=(1,), label=1, header=False, batch_size=16, report="report_mcc"),
    TaskLayout("SST-2", inputs=(0,), test_inputs=(1,), label=1),
    TaskLayout("MRPC", inputs=(3, 4), test_inputs=(3, 4), label=0, batch_size=16, report="report_acc_and_f1"),
    TaskLayout("STS-B", inputs=(7, 8), test_inputs=(7, 8), label=9, num_classes=1, regression=True, batch_size=16,
               lr=2e-5, report="report_pearson_and_spearman"),
    TaskLayout("QQP", inputs=(3, 4), test_inputs=(1, 2), label=5, num_fields=6, report="report_acc_and_f1"),
    TaskLayout("MNLI", inputs=(8, 9), test_inputs=(8, 9), label=11, dev_label=15, num_classes=3,
               dev=("dev_matched", "dev_mismatched"), test=("test_matched", "test_mismatched")),
    TaskLayout("QNLI", inputs=(1, 2), test_inputs=(1, 2), label=3),
    TaskLayout("RTE", inputs=(1, 2), test_inputs=(1, 2), label=3, batch_size=16, lr=2e-5),
    TaskLayout("WNLI", inputs=(1, 2), test_inputs=(1, 2), label=3, batch_size=16, lr=2e-5),
)}


def task_layout(name: str) -> TaskLayout:
    """The layout of a task named as GLUE names its folder (any case), or ``FOLDER:TASK``:
    your own data in the folder FOLDER, laid out as the GLUE task TASK (for example
    ``reviews:SST-2``: a header line, then a sentence and its label per row)."""
    folder, _, like = name.strip().partition(":")
    by_lower = {key.lower(): layout for key, layout in TASKS.items()}
    layout = by_lower.get((like or folder).strip().lower())
    if layout is None:
        raise MagicError(f"unknown GLUE task '{like or folder}' (known: {', '.join(TASKS)}; your own data: "
                         "FOLDER:TASK, e.g. reviews:SST-2)")
    if like and folder.strip():
        if os.sep in folder or folder.strip() in (".", ".."):
            raise MagicError(f"--tasks {name}: FOLDER is a folder name inside --glue-dir, not a path")
        layout = replace(layout, name=folder.strip())
    return layout


def find_task_dir(glue_dir: str, layout: TaskLayout) -> Optional[str]:
    for entry in sorted(os.listdir(glue_dir)):
        path = os.path.join(glue_dir, entry)
        if entry.lower() == layout.name.lower() and os.path.isdir(path):
            return path
    return None


def fields_needed(columns: Sequence[int], label: Optional[int]) -> int:
    return max(list(columns) + ([label] if label is not None else [])) + 1


def read_rows(path: str, layout: TaskLayout, columns: Sequence[int], label: Optional[int],
              header: bool) -> Tuple[List[List[str]], List[str], int]:
    """(inputs per column, labels, rows dropped) of one TSV file; fields split on tabs
    only, never unquoted (GLUE's sentences hold quotes)."""
    needed = fields_needed(columns, label)
    inputs: List[List[str]] = [[] for _ in columns]
    labels: List[str] = []
    dropped = 0
    lines = read_text_lines(path, "GLUE file", lone_cr_ends_line=False)
    for line in lines[1 if header else 0:]:
        fields = line.split("\t")
        wrong_count = label is not None and layout.num_fields and len(fields) != layout.num_fields
        if wrong_count or len(fields) < needed:
            dropped += 1
            continue
        for values, column in zip(inputs, columns):
            values.append(fields[column].strip())
        if label is not None:
            labels.append(fields[label].strip())
    return inputs, labels, dropped


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def _binarise(destdir: str, trainpref: str, validpref: str = "", testpref: str = "", srcdict: str = "") -> None:
    """fairseq-preprocess --only-source, run in this process."""
    from fairseq import options
    from fairseq_cli import preprocess

    argv = ["--only-source", "--trainpref", trainpref, "--destdir", destdir, "--workers", "1"]
    argv += ["--validpref", validpref] if validpref else []
    argv += ["--testpref", testpref] if testpref else []
    argv += ["--srcdict", srcdict] if srcdict else []
    fairseq_log = logging.getLogger("fairseq_cli.preprocess")
    level = fairseq_log.level
    fairseq_log.setLevel(logging.WARNING)  # one summary line per task is ours to print
    try:
        preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    finally:
        fairseq_log.setLevel(level)


def label_order(labels: Sequence[str]) -> List[str]:
    """The class labels in index order: 0..K-1 numerically when they are exactly those
    integers, otherwise sorted (as strings)."""
    classes = set(labels)
    if all(label.isdigit() for label in classes) and {int(label) for label in classes} == set(range(len(classes))):
        return sorted(classes, key=int)
    return sorted(classes)


def write_label_dictionary(path: str, labels: Sequence[str]) -> List[str]:
    """A fairseq dictionary file of the class labels in ``label_order``; returns that order."""
    order = label_order(labels)
    counts = {label: 0 for label in order}
    for label in labels:
        counts[label] += 1
    _write_lines(path, [f"{label} {counts[label]}" for label in order])
    return order


def _split_names(names: Sequence[str], base: str) -> List[str]:
    """fairseq's names for a task's dev (or test) files: valid, valid1, ..."""
    return [base if i == 0 else f"{base}{i}" for i in range(len(names))]


def prepare_task(task_dir: str, layout: TaskLayout, encode, dictionary: str, out: str) -> dict:
    """Encode and binarise one task folder into ``out`` (``input0``, ``input1``, ``label``)."""
    train = os.path.join(task_dir, "train.tsv")
    if not os.path.isfile(train):
        raise MagicError(f"{layout.name}: no train.tsv in {task_dir}")
    splits = [("train", "train", layout.label)]
    splits += [(name, "valid", layout.dev_label if layout.dev_label is not None else layout.label) for name in layout.dev]
    splits += [(name, "test", None) for name in layout.test]
    counts: Dict[str, int] = {}
    train_labels: List[str] = []
    dropped_total = 0
    if os.path.isdir(out):
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix=f"glue-{layout.name}-") as work:
        prefixes: Dict[str, List[str]] = {"train": [], "valid": [], "test": []}
        for name, kind, label in splits:
            path = os.path.join(task_dir, f"{name}.tsv")
            if not os.path.isfile(path):
                if kind == "train" or kind == "valid":
                    raise MagicError(f"{layout.name}: no {name}.tsv in {task_dir}")
                continue  # a test split is optional
            columns = layout.test_inputs if kind == "test" else layout.inputs
            inputs, labels, dropped = read_rows(path, layout, columns, label, header=layout.header or kind == "test")
            if not inputs[0]:
                raise MagicError(f"{layout.name}: {path} has no row with the task's {fields_needed(columns, label)} "
                                 "columns; is it GLUE's layout?")
            if kind != "test" and not layout.regression:
                classes = sorted(set(labels))
                if len(classes) > layout.num_classes:
                    raise MagicError(f"{layout.name}: {path} has {len(classes)} labels ({', '.join(classes[:6])}), "
                                     f"the task has {layout.num_classes}; is the column layout GLUE's?")
            dropped_total += dropped
            counts[name] = len(inputs[0])
            if kind == "train":
                train_labels = labels
            prefix = os.path.join(work, name)
            prefixes[kind].append(prefix)
            for i, values in enumerate(inputs):
                _write_lines(f"{prefix}.input{i}.tok", [encode(v) for v in values])
            if kind != "test":
                if layout.regression:
                    try:
                        _write_lines(f"{prefix}.label", [str(float(v) / 5.0) for v in labels])
                    except ValueError as err:
                        raise MagicError(f"{layout.name}: {path}: a score that is not a number ({err})") from None
                else:
                    _write_lines(f"{prefix}.label", labels)
        for i in range(len(layout.inputs)):
            _binarise(os.path.join(out, f"input{i}"), f"{prefixes['train'][0]}.input{i}.tok",
                      ",".join(f"{p}.input{i}.tok" for p in prefixes["valid"]),
                      ",".join(f"{p}.input{i}.tok" for p in prefixes["test"]), srcdict=dictionary)
        label_dir = os.path.join(out, "label")
        classes: List[str] = []
        if layout.regression:
            os.makedirs(label_dir, exist_ok=True)
            for kind in ("train", "valid"):
                for prefix, split in zip(prefixes[kind], _split_names(prefixes[kind], kind)):
                    shutil.copyfile(f"{prefix}.label", os.path.join(label_dir, f"{split}.label"))
        else:
            label_dict = os.path.join(work, "label.dict.txt")
            classes = write_label_dictionary(label_dict, train_labels)
            _binarise(label_dir, f"{prefixes['train'][0]}.label", ",".join(f"{p}.label" for p in prefixes["valid"]),
                      srcdict=label_dict)
    return {"task": layout.name, "out": out, "rows": counts, "dropped": dropped_total,
            "num_classes": layout.num_classes, "regression": layout.regression, "labels": classes}


@dataclass
class Schedule:
    """The updates of fine-tuning for ``epochs`` over ``rows`` training rows at ``batch_size`` sentences."""

    rows: int
    epochs: int
    batch_size: int
    warmup_fraction: float = 0.06  # RoBERTa's GLUE recipe: 6% of the updates

    @property
    def updates(self) -> int:
        return self.epochs * math.ceil(self.rows / self.batch_size)

    @property
    def warmup(self) -> int:
        return round(self.warmup_fraction * self.updates)

    def options(self) -> str:
        return (f"--batch-size {self.batch_size} --max-epoch {self.epochs} --total-num-update {self.updates} "
                f"--warmup-updates {self.warmup}")


def suggested_lr(layer_params: Optional[int], layout: TaskLayout) -> Tuple[float, str]:
    """A learning rate for a child of ``layer_params`` layer parameters, from the rates measured by
    model size (docs/search-export-finetune.md), and why."""
    if layer_params is None:
        return layout.lr, "fairseq's GLUE rate for RoBERTa-base; give --model to size it to the child"
    millions = layer_params / 1e6
    if millions < 1:
        return 1e-3, f"the child has {millions:.2f}M layer parameters: under 1M, 1e-3 measured best"
    if millions < 10:
        return 3e-4, f"the child has {millions:.2f}M layer parameters: at a few million, 3e-4 measured best"
    return layout.lr, f"the child has {millions:.1f}M layer parameters: fairseq's GLUE rate"


def finetune_config(layout: TaskLayout, data: str, schedule: Schedule, lr: float, max_positions: int,
                    restore_file: str = "") -> dict:
    """A ``fairseq-hydra-train`` config that fine-tunes a magic_child on one prepared task folder:
    fairseq's RoBERTa GLUE settings, with the updates of ``schedule``."""
    from .. import __file__ as plugin

    task = {"_name": "sentence_prediction", "data": os.path.abspath(data), "init_token": 0, "separator_token": 2,
            "num_classes": layout.num_classes, "max_positions": max_positions, "shorten_method": "truncate"}
    if layout.regression:
        task["regression_target"] = True
    criterion = {"_name": "sentence_prediction", **({layout.report: True} if layout.report else {})}
    dataset = {"batch_size": schedule.batch_size, "required_batch_size_multiple": 1, "num_workers": 0}
    if len(layout.dev) > 1:
        dataset["valid_subset"] = ",".join(_split_names(layout.dev, "valid"))
    return {
        "common": {"log_format": "simple", "log_interval": 100, "user_dir": os.path.dirname(os.path.abspath(plugin))},
        "task": task,
        "checkpoint": {"restore_file": os.path.abspath(restore_file) if restore_file else "???",
                       "reset_optimizer": True, "reset_dataloader": True, "reset_meters": True,
                       "no_epoch_checkpoints": True,
                       "best_checkpoint_metric": "loss" if layout.regression else "accuracy",
                       "maximize_best_checkpoint_metric": not layout.regression},
        "distributed_training": {"find_unused_parameters": True},
        "criterion": criterion,
        "dataset": dataset,
        "optimizer": {"_name": "adam", "weight_decay": 0.1, "adam_betas": "(0.9,0.98)", "adam_eps": 1e-06},
        "lr_scheduler": {"_name": "polynomial_decay", "warmup_updates": schedule.warmup,
                         "total_num_update": schedule.updates},
        "optimization": {"clip_norm": 0.0, "lr": [lr], "max_update": schedule.updates, "max_epoch": schedule.epochs},
        "model": {"_name": "magic_child", "dropout": 0.1, "attention_dropout": 0.1},
    }


def write_finetune_config(layout: TaskLayout, data: str, schedule: Schedule, lr: float, why: str,
                          max_positions: int, restore_file: str = "") -> str:
    """``data``/finetune.yaml: ``finetune_config`` with a header saying how it was sized and how to run it."""
    from omegaconf import OmegaConf

    header = [f"Fine-tuning on {data}, written by fairseq-magic glue-prep:",
              f"{schedule.rows:,} training rows, {schedule.epochs} epochs at batch {schedule.batch_size} = "
              f"{schedule.updates:,} updates, {schedule.warmup:,} of warm-up; lr {lr:g} ({why}).",
              f"  fairseq-hydra-train --config-dir {os.path.abspath(data)} --config-name finetune"
              + ("" if restore_file else " checkpoint.restore_file=$PWD/child/model.pt"),
              "On GPUs add common.fp16=true; checkpoint.save_dir=... says where the checkpoints go."]
    path = os.path.join(data, "finetune.yaml")
    config = finetune_config(layout, data, schedule, lr, max_positions, restore_file)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"# {line}\n" for line in header)
        f.write(OmegaConf.to_yaml(OmegaConf.create(config)))
    return path


def prepare(glue_dir: str, out: str, spm_model: str, dictionary: str, tasks: Sequence[str] = (),
            on_task=None, bpe_codes: str = "") -> List[dict]:
    """Prepare ``tasks`` (default: every GLUE task folder found in ``glue_dir``) into ``out/<TASK>-bin``,
    the text encoded with the sentencepiece model (or fastBPE's ``bpe_codes``);
    ``on_task(layouts, result)`` is called after each task."""
    if not os.path.isdir(glue_dir):
        raise MagicError(f"GLUE directory not found: {glue_dir}")
    if not os.path.isfile(dictionary):
        raise MagicError(f"dictionary not found: {dictionary}")
    encode = text_encoder(spm_model, bpe_codes)
    if tasks:
        layouts = [task_layout(name) for name in tasks]
        missing = [layout.name for layout in layouts if find_task_dir(glue_dir, layout) is None]
        if missing:
            raise MagicError(f"no folder for {', '.join(missing)} in {glue_dir}")
    else:
        layouts = [layout for layout in TASKS.values() if find_task_dir(glue_dir, layout) is not None]
        if not layouts:
            raise MagicError(f"no GLUE task folder ({', '.join(TASKS)}) in {glue_dir}")
    results = []
    for layout in layouts:
        results.append(prepare_task(find_task_dir(glue_dir, layout), layout, encode, dictionary,
                                    os.path.join(out, f"{layout.name}-bin")))
        if on_task is not None:
            on_task(layouts, results[-1])
    return results
