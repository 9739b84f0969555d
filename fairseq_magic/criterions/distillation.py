"""Knowledge distillation in two stages (Sec. 5.4, Table 3, following NAS-BERT):
a frozen teacher guides the pre-training and the fine-tuning of a found child.

    # 1. pre-training: masked-LM loss mixed with the teacher's soft predictions
    fairseq-train data-bin --user-dir fairseq_magic --task masked_lm --criterion masked_lm_kd \\
        --kd-teacher teacher/model.pt --kd-alpha 0.5 --kd-temperature 1 --arch magic_child ...
    # 2. fine-tuning: sentence_prediction mixed with the fine-tuned teacher's logits
    fairseq-train RTE-bin --user-dir fairseq_magic --task sentence_prediction \\
        --criterion sentence_prediction_kd --kd-teacher teacher-rte/checkpoint_best.pt ...

Both are fairseq's own criteria (``masked_lm``, ``sentence_prediction``) with
one more term. With weight a = ``--kd-alpha`` and temperature T:

    loss = (1 - a) * task loss + a * T^2 * KL(softmax(teacher / T) || softmax(student / T))

summed over the masked tokens (pre-training) or the sentences (fine-tuning),
as fairseq sums the task loss; a regression head (STS-B) takes the squared
difference to the teacher's prediction instead of the KL. The teacher is any
fairseq RoBERTa or ``magic_child`` checkpoint over the data's dictionary (for
fine-tuning: one fine-tuned with the same classification head), loaded
safely, frozen, in eval mode, outside the student's optimizer and checkpoint.
Training logs ``task_loss`` and ``kd_loss`` beside ``loss``; validation reports
the student's own task loss as ``loss`` (comparable with a run without a
teacher).
"""

import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import checkpoint_utils
from fairseq.criterions import register_criterion
from fairseq.criterions.masked_lm import MaskedLmConfig, MaskedLmLoss
from fairseq.criterions.sentence_prediction import SentencePredictionConfig, SentencePredictionCriterion
from fairseq.data import Dictionary
from fairseq.logging import metrics
from omegaconf import open_dict

from ..errors import MagicError
from ..ranges import check_section
from .magic_mlm import masked_lm_loss


@dataclass
class DistillationConfig:
    kd_teacher: str = field(default="", metadata={
        "help": "the teacher: a fairseq RoBERTa or magic_child checkpoint over the data's dictionary (for "
                "sentence_prediction_kd, one fine-tuned with the same classification head)"})
    kd_alpha: float = field(default=0.5, metadata={"range": "[0, 1]",
                                                   "help": "weight of the teacher's term (1 - alpha: the task loss)"})
    kd_temperature: float = field(default=1.0, metadata={"range": "(0, inf)",
                                                         "help": "softmax temperature of teacher and student (> 0)"})


def _attach_teacher(criterion, cfg, task, head: str = "") -> None:
    """Check the options and give ``criterion`` its ``alpha``, ``temperature`` and ``teacher``."""
    check_section(cfg, DistillationConfig)
    if not cfg.kd_teacher:
        raise MagicError("knowledge distillation needs --kd-teacher (a RoBERTa or magic_child checkpoint)")
    criterion.alpha, criterion.temperature = cfg.kd_alpha, cfg.kd_temperature
    criterion.teacher = Teacher(cfg.kd_teacher, task, head=head)


def _dictionary_file(data: str, beside: str = "") -> str:
    """The dict.txt of a model: beside its checkpoint (an export), else in its data
    directory (masked_lm's, or sentence_prediction's input0/); "" if none is there."""
    root = str(data or "").split(os.pathsep)[0]
    candidates = ([os.path.join(os.path.dirname(os.path.abspath(beside)), "dict.txt")] if beside else []) + \
        ([os.path.join(root, "dict.txt"), os.path.join(root, "input0", "dict.txt")] if root else [])
    return next((c for c in candidates if os.path.isfile(c)), "")


class Teacher:
    """A frozen teacher model: loaded once without running code from the file, in
    eval mode, not a submodule of the criterion (so neither the optimizer nor the
    student's checkpoint sees it), moved to the student's device and dtype on use."""

    def __init__(self, path: str, task, head: str = ""):
        """``head``: the classification head the teacher must have (fine-tuning)."""
        if not os.path.isfile(path):
            raise MagicError(f"--kd-teacher not found: {path}")
        data = task.cfg.data
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
        if head and not any(k.startswith(f"classification_heads.{head}.") for k in state["model"]):
            raise MagicError(f"the teacher {path} has no classification head '{head}': give a teacher fine-tuned "
                             "on this task")
        trained_on = str(state["cfg"]["task"].get("data", "") or "")
        with open_dict(state["cfg"]):
            state["cfg"]["task"]["data"] = data  # its task (dictionary, label dictionary) is built on our data
        dictionary = task.source_dictionary
        own, ours = _dictionary_file(trained_on, beside=path), _dictionary_file(data)
        if own and ours and Dictionary.load(own).symbols != Dictionary.load(ours).symbols:
            raise MagicError(f"the teacher's dictionary ({own}, {len(Dictionary.load(own))} symbols) differs from the "
                             f"data's ({ours}, {len(Dictionary.load(ours))}): its predictions would be over other tokens")
        rows = [v.shape[0] for k, v in state["model"].items() if k.endswith("embed_tokens.weight")
                or k.endswith("embed_tokens.table.weight")]
        if rows and rows[0] != len(dictionary):
            raise MagicError(f"the teacher's vocabulary has {rows[0]} symbols, the data's dictionary {len(dictionary)}")
        models, _ = checkpoint_utils.load_model_ensemble([path], arg_overrides={"data": data}, state=state)
        self.model = models[0].eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, student: torch.nn.Module, *args, **kwargs):
        like = next(student.parameters())
        if next(self.model.parameters()).dtype != like.dtype or next(self.model.parameters()).device != like.device:
            self.model.to(device=like.device, dtype=like.dtype)
        return self.model(*args, **kwargs)


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over rows, in float32."""
    t = temperature
    log_p = F.log_softmax(teacher.float() / t, dim=-1)
    log_q = F.log_softmax(student.float() / t, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum() * t * t


def _log_terms(logging_outputs, size_key: str) -> None:
    size = sum(log.get(size_key, 0) for log in logging_outputs)
    for key in ("task_loss", "kd_loss"):
        if any(key in log for log in logging_outputs):
            value = sum(log.get(key, 0) for log in logging_outputs)
            metrics.log_scalar(key, value / max(size, 1) / math.log(2), size, round=4)


@dataclass
class MaskedLMDistillationConfig(MaskedLmConfig, DistillationConfig):
    pass


@register_criterion("masked_lm_kd", dataclass=MaskedLMDistillationConfig)
class MaskedLMDistillation(MaskedLmLoss):
    """fairseq's masked_lm, plus the teacher's soft predictions at the masked positions."""

    def __init__(self, cfg: MaskedLMDistillationConfig, task):
        super().__init__(cfg, task)
        _attach_teacher(self, cfg, task)

    def forward(self, model, sample, reduce=True):
        out = masked_lm_loss(model, sample, self.padding_idx, tpu=self.tpu)
        loss = out.loss
        logging_output = {"ntokens": sample["ntokens"], "nsentences": sample["nsentences"],
                          "sample_size": out.sample_size}
        if model.training:
            teacher_logits = self.teacher(model, **sample["net_input"], masked_tokens=out.masked_tokens)[0]
            kd = soft_cross_entropy(out.logits, teacher_logits, self.temperature)
            logging_output.update(task_loss=out.loss.data, kd_loss=kd.data)
            loss = (1 - self.alpha) * out.loss + self.alpha * kd
        logging_output["loss"] = loss if self.tpu else loss.data
        return loss, out.sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        MaskedLmLoss.reduce_metrics(logging_outputs)
        _log_terms(logging_outputs, "sample_size")


class _KeepOutput:
    """The student as the parent criterion sees it (every call and attribute go to
    it); keeps the output of its forward, so the parent's loss and metrics are reused."""

    def __init__(self, model):
        self.__dict__.update(model=model, output=None)

    def __call__(self, *args, **kwargs):
        self.__dict__["output"] = self.model(*args, **kwargs)
        return self.output

    def __getattr__(self, name):
        return getattr(self.model, name)


@dataclass
class SentencePredictionDistillationConfig(SentencePredictionConfig, DistillationConfig):
    pass


@register_criterion("sentence_prediction_kd", dataclass=SentencePredictionDistillationConfig)
class SentencePredictionDistillation(SentencePredictionCriterion):
    """fairseq's sentence_prediction, plus the fine-tuned teacher's logits."""

    def __init__(self, cfg: SentencePredictionDistillationConfig, task):
        super().__init__(cfg, task)
        _attach_teacher(self, cfg, task, head=self.classification_head_name)

    def forward(self, model, sample, reduce=True):
        student = _KeepOutput(model)
        task_loss, sample_size, logging_output = super().forward(student, sample, reduce)
        if not model.training:
            return task_loss, sample_size, logging_output
        logits = student.output[0]
        teacher_logits = self.teacher(model, **sample["net_input"], features_only=True,
                                      classification_head_name=self.classification_head_name)[0]
        if self.regression_target:
            kd = F.mse_loss(logits.view(-1).float(), teacher_logits.view(-1).float(), reduction="sum")
        else:
            kd = soft_cross_entropy(logits, teacher_logits, self.temperature)
        loss = (1 - self.alpha) * task_loss + self.alpha * kd
        logging_output.update(loss=loss.data, task_loss=task_loss.data, kd_loss=kd.data)
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        SentencePredictionCriterion.reduce_metrics(logging_outputs)
        _log_terms(logging_outputs, "sample_size")
