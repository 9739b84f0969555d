"""The masked-LM loss, computed in one place for training, scoring and interference.

It is fairseq's ``MaskedLmLoss`` (criterions/masked_lm.py) as a function: the
model runs its LM head on the masked positions only, and the cross entropy is
taken in float32 (``fairseq.modules.cross_entropy``), so ``--fp16`` and
``--bf16`` runs compute it as fairseq does.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from fairseq import modules


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
