"""Scoring children with the shared weights on a fixed slice of validation data.

Used by the anchor of MAGIC-A, shrinking, search and rank correlation. The
slice is the first ``sentences`` validation examples, masked exactly as
fairseq's validation masks them (epoch 1), collated once and kept. In
distributed training each rank scores its own share of the batches and one
all-reduce adds the sums up, so every rank gets the same numbers and takes the
same decision. Scores are kept per sentence too, for paired comparisons of two
children on the same sentences.
"""

import math
import os
from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from fairseq import utils

from ..criterions.magic_mlm import cross_entropy
from ..errors import MagicError
from ..models.supernet import train_mode
from ..space import Child
from ..streams import rank_and_world


@dataclass
class ChildScore:
    loss: float  # masked-LM loss per masked token, in bits (base 2, as fairseq logs it)
    accuracy: float  # masked-LM accuracy
    per_sentence: np.ndarray  # (sentences, 3): summed loss (nats), correct, masked tokens; by sentence id

    def value(self, metric: str) -> float:
        """Val(child): higher is better."""
        return self.accuracy if metric == "accuracy" else -self.loss

    def sentence_values(self, metric: str) -> np.ndarray:
        """Val per sentence (those with masked tokens), in the units of :meth:`value`."""
        s = self.per_sentence[self.per_sentence[:, 2] > 0]
        return s[:, 1] / s[:, 2] if metric == "accuracy" else -s[:, 0] / s[:, 2] / math.log(2)


def validation_batches(task, subset: str, sentences: int, batch_size: int, split_ranks: bool = True) -> List[dict]:
    """This rank's share of the first ``sentences`` examples of ``subset``, collated
    (every batch, on every rank, with ``split_ranks=False``)."""
    if subset not in task.datasets:
        task.load_dataset(subset, combine=False, epoch=1)
    dataset = task.dataset(subset)
    dataset.set_epoch(1)  # the masking fairseq's own validation uses
    n = min(sentences, len(dataset))
    chunks = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    rank, world = rank_and_world() if split_ranks else (0, 1)
    return [dataset.collater([dataset[i] for i in chunk]) for chunk in chunks[rank::world]]


@torch.no_grad()
def score_children(model, supernet, children: Sequence[Child], batches: Sequence[dict],
                   shared_prefixes: bool = True) -> List[ChildScore]:
    """Masked-LM loss and accuracy of each child, summed over all ranks' batches,
    and per sentence (batches carry fairseq's ``id``: sentence i of the slice).

    ``model`` is what runs the forward (possibly wrapped), ``supernet`` the
    MagicSupernetModel inside it. Dropout is off while scoring. With
    ``shared_prefixes`` each batch is embedded once and the children are walked
    as a trie of their layer prefixes (``prefix_walk``): a prefix several
    children share is computed once. The numbers are those of one forward per
    child (``shared_prefixes=False``), exactly.
    """
    device = next(supernet.parameters()).device
    pad = supernet.encoder.dictionary.pad()
    size = torch.tensor([max([int(b["id"].max()) + 1 for b in batches] or [0])], device=device)
    if rank_and_world()[1] > 1:
        torch.distributed.all_reduce(size, op=torch.distributed.ReduceOp.MAX)
    sums = torch.zeros(len(children), int(size), 3, dtype=torch.float64, device=device)  # loss, correct, count

    def add(i: int, logits: torch.Tensor, sample: dict, masked: torch.Tensor) -> None:
        targets = sample["target"][masked]
        loss = cross_entropy(logits, targets, pad, reduction="none")
        rows = sample["id"][masked.nonzero()[:, 0]]  # the sentence of each masked token
        per_token = torch.stack([loss, (logits.argmax(-1) == targets).float(), torch.ones_like(loss)], dim=1)
        sums[i].index_add_(0, rows, per_token.double())  # (masked tokens, 3)

    with train_mode(model, training=False):
        for sample in batches:
            sample = utils.apply_to_sample(lambda t: t.to(device), sample)
            masked = sample["target"].ne(pad)  # (B, T)
            if not masked.any():
                continue
            if shared_prefixes:
                for i, last in prefix_walk(supernet, children, sample["net_input"]["src_tokens"]):
                    add(i, supernet.lm_logits(last, masked), sample, masked)
            else:
                for i, child in enumerate(children):
                    with supernet.child_context(child):
                        add(i, supernet(**sample["net_input"], masked_tokens=masked)[0], sample, masked)
    if rank_and_world()[1] > 1:
        torch.distributed.all_reduce(sums)
    sums = sums.cpu().numpy()
    scores = []
    for s in sums:
        loss, correct, count = s.sum(axis=0)
        scores.append(ChildScore(loss=float(loss / max(count, 1) / math.log(2)), accuracy=float(correct / max(count, 1)),
                                 per_sentence=s))
    return scores


def prefix_walk(supernet, children: Sequence[Child], src_tokens: torch.Tensor) -> Iterator[Tuple[int, torch.Tensor]]:
    """(index, H_N) of every child on ``src_tokens``, walking the children in
    lexicographic order and keeping one hidden state per depth of the current
    path: a child recomputes only the layers after the prefix it shares with the
    previous one. Memory: one child's activations times the depth."""
    x, padding_mask = supernet.embed(src_tokens)
    states, path = [x], ()
    for i in sorted(range(len(children)), key=lambda i: tuple(children[i])):
        child = tuple(children[i])
        shared = 0
        while shared < len(path) and path[shared] == child[shared]:
            shared += 1
        del states[shared + 1:]
        for layer in range(shared, len(child)):
            states.append(supernet.run_layer(layer, child[layer], states[layer], padding_mask))
        path = child
        yield i, states[-1]


def load_for_scoring(checkpoint: str, data: str = "", subset: str = "valid", sentences: int = 512,
                     batch_size: int = 32, cpu: bool = False, fp16: bool = False):
    """A super-net checkpoint ready to score children: (model in eval mode on its
    device, its task, its space, the first ``sentences`` of ``subset`` collated and
    on the device). ``data`` replaces the data directory the checkpoint records."""
    from fairseq import checkpoint_utils

    from .. import models  # noqa: F401  (registers the architectures)
    from ..checkpoint import load_supernet_checkpoint

    state, _, space = load_supernet_checkpoint(checkpoint, {"data": data} if data else None)
    data = state["cfg"]["task"]["data"]
    if not os.path.isfile(os.path.join(str(data).split(os.pathsep)[0], "dict.txt")):
        raise MagicError(f"no dict.txt in data directory '{data}' (give --data, a fairseq-preprocess output)")
    [model], _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], state=state)
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    model.to(device).eval()
    if fp16:
        model.half()
    batches = [utils.apply_to_sample(lambda t: t.to(device), b)
               for b in validation_batches(task, subset, sentences, batch_size)]
    if not batches:
        raise MagicError(f"no validation data in subset '{subset}' of {data}")
    return model, task, space, batches
