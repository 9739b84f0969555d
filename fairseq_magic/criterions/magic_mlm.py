"""The super-net's loss: masked-LM cross entropy of the running child, plus the
alignment term of MAGIC-A (Eq. 1-2):

    L = L_mlm + lambda * sum_{n in {b, 2b, ...}} MSE(H_n(anchor), H_n(child))

H_n is layer n's output; the anchor's H_n are detached targets (the task
computes them, ``alignment_targets``). Each MSE is a mean over the non-padding
tokens and channels of the batch. fairseq divides the summed loss by
``sample_size`` (masked tokens, summed over micro-batches and GPUs), so the
term enters the summed loss as ``lambda * MSE * sample_size``: its weight
relative to the per-token MLM loss stays lambda whatever the batch size,
``--update-freq`` or number of GPUs.
"""

import math
import re
from dataclasses import dataclass, field
from typing import List

import torch
from fairseq import modules
from fairseq.criterions import register_criterion
from fairseq.criterions.masked_lm import MaskedLmConfig, MaskedLmLoss
from fairseq.logging import metrics

from ..errors import MagicError

_CHILD_LOSS = re.compile(r"^(child\d+|mixture)_loss$")


@dataclass
class MagicMLMConfig(MaskedLmConfig):
    align_lambda: float = field(
        default=0.0, metadata={"help": "MAGIC-A: weight of the alignment term (paper: 0.5; 0 = off)"}
    )
    align_every: int = field(
        default=4, metadata={"help": "MAGIC-A: align the outputs of every b-th layer (paper: 4)"}
    )


def aligned_layers(num_layers: int, every: int) -> List[int]:
    """Indices n of H_n taken for alignment: the end of every ``every`` layers."""
    return list(range(every, num_layers + 1, every))


@register_criterion("magic_mlm", dataclass=MagicMLMConfig)
class MagicMLMCriterion(MaskedLmLoss):
    def __init__(self, cfg: MagicMLMConfig, task):
        super().__init__(cfg, task)
        if cfg.align_lambda < 0:
            raise MagicError("--align-lambda must be >= 0")
        if cfg.align_every < 1:
            raise MagicError("--align-every must be >= 1")
        if cfg.align_lambda > 0 and not hasattr(task, "alignment_targets"):
            raise MagicError("--align-lambda needs --task magic_masked_lm")
        self.align_lambda = cfg.align_lambda
        self.align_every = cfg.align_every
        space = getattr(task, "space", None)
        if cfg.align_lambda > 0 and space is not None and not aligned_layers(space.num_layers, cfg.align_every):
            raise MagicError(f"--align-every {cfg.align_every} exceeds the {space.num_layers} layers")

    def forward(self, model, sample, reduce=True):
        masked_tokens = sample["target"].ne(self.padding_idx)
        sample_size = masked_tokens.int().sum()
        if self.tpu:
            masked_tokens = None
        elif masked_tokens.device == torch.device("cpu"):
            if not masked_tokens.any():
                masked_tokens = None
        else:
            masked_tokens = torch.where(masked_tokens.any(), masked_tokens, masked_tokens.new([True]))

        src_tokens = sample["net_input"]["src_tokens"]
        align = model.training and self.task.alignment_active(self._update_num())
        if align:
            layers = aligned_layers(self.task.space.num_layers, self.align_every)
            targets = self.task.alignment_targets(model, src_tokens, layers)

        logits, extra = model(**sample["net_input"], masked_tokens=masked_tokens, return_all_hiddens=align)
        targets_mlm = model.get_targets(sample, [logits])
        if masked_tokens is not None:
            targets_mlm = targets_mlm[masked_tokens]
        mlm_loss = modules.cross_entropy(
            logits.view(-1, logits.size(-1)), targets_mlm.view(-1), reduction="sum", ignore_index=self.padding_idx
        )
        loss = mlm_loss
        logging_output = {
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": sample_size,
        }
        if align:
            keep = src_tokens.ne(self.padding_idx).t().unsqueeze(-1).type_as(targets[0])  # (T, B, 1)
            denom = keep.sum() * targets[0].size(-1)
            mse = sum(
                (((extra["inner_states"][n] - t).float() ** 2) * keep).sum() / denom
                for n, t in zip(layers, targets)
            )
            align_loss = mse * sample_size
            loss = mlm_loss + self.align_lambda * align_loss
            logging_output["align_loss"] = align_loss.data
            logging_output["mlm_loss"] = mlm_loss.data
        logging_output["loss"] = loss if self.tpu else loss.data
        return loss, sample_size, logging_output

    def _update_num(self) -> int:
        current = getattr(self.task, "_current", None)
        return current[0] if current else 0

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        MaskedLmLoss.reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        for key in ("mlm_loss", "align_loss"):
            if any(key in log for log in logging_outputs):
                value = sum(log.get(key, 0) for log in logging_outputs)
                # mlm_loss in bits per token, as fairseq's loss; align_loss is the mean MSE
                scale = math.log(2) if key == "mlm_loss" else 1.0
                metrics.log_scalar(key, value / max(sample_size, 1) / scale, sample_size, round=4)
        keys = sorted({k for log in logging_outputs for k in log if _CHILD_LOSS.match(k)})
        for key in keys:
            value = sum(log.get(key, 0) for log in logging_outputs)
            metrics.log_scalar(key, value / max(sample_size, 1) / math.log(2), sample_size, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
