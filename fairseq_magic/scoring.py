"""Scoring children with the shared weights on a fixed slice of validation data.

Used by the anchor of MAGIC-A (and by search). The slice is the first
``sentences`` validation examples, masked exactly as fairseq's validation masks
them (epoch 1), collated once and kept. In distributed training each rank
scores its own share of the batches and one all-reduce adds the sums up, so
every rank gets the same numbers and takes the same decision.
"""

import math
from dataclasses import dataclass
from typing import List, Sequence

import torch
from fairseq import utils

from .space import Child


@dataclass
class ChildScore:
    loss: float  # masked-LM loss per masked token, in bits (base 2, as fairseq logs it)
    accuracy: float  # masked-LM accuracy

    def value(self, metric: str) -> float:
        """Val(child): higher is better."""
        return self.accuracy if metric == "accuracy" else -self.loss


def rank_and_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def validation_batches(task, subset: str, sentences: int, batch_size: int) -> List[dict]:
    """This rank's share of the first ``sentences`` examples of ``subset``, collated."""
    if subset not in task.datasets:
        task.load_dataset(subset, combine=False, epoch=1)
    dataset = task.dataset(subset)
    dataset.set_epoch(1)  # the masking fairseq's own validation uses
    n = min(sentences, len(dataset))
    chunks = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    rank, world = rank_and_world()
    return [dataset.collater([dataset[i] for i in chunk]) for chunk in chunks[rank::world]]


@torch.no_grad()
def score_children(model, supernet, children: Sequence[Child], batches: Sequence[dict]) -> List[ChildScore]:
    """Masked-LM loss and accuracy of each child, summed over all ranks' batches.

    ``model`` is what runs the forward (possibly wrapped), ``supernet`` the
    MagicSupernetModel inside it. Dropout is off while scoring.
    """
    was_training = model.training
    model.eval()
    device = next(supernet.parameters()).device
    pad = supernet.encoder.dictionary.pad()
    sums = torch.zeros(len(children), 3, dtype=torch.float64, device=device)  # loss, correct, count
    try:
        for i, child in enumerate(children):
            with supernet.child_context(child):
                for sample in batches:
                    sample = utils.apply_to_sample(lambda t: t.to(device), sample)
                    masked = sample["target"].ne(pad)
                    if not masked.any():
                        continue
                    logits = supernet(**sample["net_input"], masked_tokens=masked)[0].float()
                    target = sample["target"][masked]
                    sums[i, 0] += torch.nn.functional.cross_entropy(logits, target, reduction="sum").double()
                    sums[i, 1] += (logits.argmax(-1) == target).sum()
                    sums[i, 2] += target.numel()
    finally:
        model.train(was_training)
    if rank_and_world()[1] > 1:
        torch.distributed.all_reduce(sums)
    sums = sums.cpu()
    return [
        ChildScore(loss=float(s[0] / max(s[2], 1) / math.log(2)), accuracy=float(s[1] / max(s[2], 1))) for s in sums
    ]
