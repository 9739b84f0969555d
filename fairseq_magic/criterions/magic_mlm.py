"""The super-net's loss: masked-LM cross entropy of the running child, plus,
under MAGIC-A, the alignment term that ``training/alignment.py`` computes (Eq. 1-2):

    L = L_mlm + lambda_t * sum_n MSE(H_n(anchor), H_n(child))

Each MSE is a mean over the non-padding tokens and channels of the batch.
fairseq divides the summed loss by ``sample_size`` (masked tokens, summed over
micro-batches and GPUs), so the term enters the summed loss as
``lambda * MSE * sample_size``: its weight relative to the per-token MLM loss
stays lambda whatever the batch size, ``--update-freq`` or number of GPUs.

The masked-LM loss itself, ``masked_lm_loss``, is computed here for training,
scoring, interference and distillation alike: fairseq's ``MaskedLmLoss``
(criterions/masked_lm.py) as a function. The model runs its LM head on the
masked positions only, and the cross entropy is taken in float32
(``fairseq.modules.cross_entropy``), so ``--fp16`` and ``--bf16`` runs compute
it as fairseq does.
"""

import math
import re
from dataclasses import dataclass
from typing import Optional

import torch
from fairseq import modules, utils
from fairseq.criterions import register_criterion
from fairseq.criterions.masked_lm import MaskedLmConfig, MaskedLmLoss
from fairseq.logging import metrics

_CHILD_LOSS = re.compile(r"^(child\d+|mixture)_loss$")


@register_criterion("magic_mlm", dataclass=MaskedLmConfig)
class MagicMLMCriterion(MaskedLmLoss):
    def forward(self, model, sample, reduce=True):
        alignment = getattr(self.task, "alignment", None)  # MAGIC-A (training/alignment.py), when it is on
        align = model.training and alignment is not None and alignment.active
        out = masked_lm_loss(model, sample, self.padding_idx, tpu=self.tpu,
                             return_all_hiddens=align and alignment.uses_training_states)
        loss, sample_size = out.loss, out.sample_size
        logging_output = {"ntokens": sample["ntokens"], "nsentences": sample["nsentences"], "sample_size": sample_size}
        if align:
            tokens = sample["net_input"]["src_tokens"]
            align_loss = alignment.loss(model, tokens, out.extra.get("inner_states")) * sample_size
            logging_output["align_loss"] = align_loss.data
            logging_output["mlm_loss"] = loss.data
            loss = loss + alignment.weight * align_loss
        logging_output["loss"] = loss if self.tpu else loss.data
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        # ppl is the masked-LM loss's, not the total's: registered before fairseq's own (the first one counts)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(
            (meters["mlm_loss"] if "mlm_loss" in meters else meters["loss"]).avg))
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


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor  # summed over masked tokens (nats), or per masked token with reduction="none"
    sample_size: torch.Tensor  # number of masked tokens
    extra: dict  # the model's second output (``inner_states`` with return_all_hiddens)
    logits: torch.Tensor  # (masked tokens, V): the LM head at the masked positions (every position if none)
    masked_tokens: Optional[torch.Tensor]  # (B, T) the positions the head ran on; None: all


def masked_lm_loss(model, sample: dict, padding_idx: int, reduction: str = "sum",
                   return_all_hiddens: bool = False, tpu: bool = False) -> MaskedLMOutput:
    """Forward ``sample`` through ``model`` and take the masked-LM cross entropy."""
    masked = sample["target"].ne(padding_idx)
    sample_size = masked.int().sum()
    masked_tokens: Optional[torch.Tensor] = masked
    if tpu:
        masked_tokens = None
    elif masked.device == torch.device("cpu"):
        if not masked.any():  # nothing masked: fairseq runs every position (the loss is 0)
            masked_tokens = None
    else:  # no host sync on an accelerator: keep one position when nothing is masked
        masked_tokens = torch.where(masked.any(), masked, masked.new([True]))
    forward = {"return_all_hiddens": True} if return_all_hiddens else {}
    logits, extra = model(**sample["net_input"], masked_tokens=masked_tokens, **forward)
    targets = sample["target"]
    if masked_tokens is not None:
        targets = targets[masked_tokens]
    loss = cross_entropy(logits, targets, padding_idx, reduction)
    return MaskedLMOutput(loss=loss, sample_size=sample_size, extra=extra or {}, logits=logits,
                          masked_tokens=masked_tokens)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, padding_idx: int, reduction: str = "sum") -> torch.Tensor:
    """The masked-LM cross entropy of ``logits`` (..., V) against ``targets`` (...), in float32."""
    return modules.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), reduction=reduction,
                                 ignore_index=padding_idx)
