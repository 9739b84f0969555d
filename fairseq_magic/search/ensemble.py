"""Ensembles: several super-nets (the seeds of one method, or snapshots of one
run) as one estimator of a child.

The seeds of one method disagree about the children (tau sd 0.05-0.10 between
seeds at CPU scale); averaging their shared-weight losses is a cheap variance
reduction. ``search`` and ``rank correlate`` take an ensemble wherever they take
a super-net checkpoint, its members joined by ``+``:

    fairseq-magic search --checkpoint seed1/checkpoint_last.pt+seed2/checkpoint_last.pt ...
    fairseq-magic rank correlate --checkpoints spos1.pt+spos2.pt fair1.pt ...

A child's ensemble score is the mean over the members of its masked-LM loss and
accuracy, each member scoring the same validation sentences with the same
masks. Every member must search the same space.
"""

import os
from typing import Callable, List, Sequence

import numpy as np

from ..errors import MagicError
from ..space import Child
from .scoring import ChildScore, score_children

SEPARATOR = "+"


def members(spec: str) -> List[str]:
    """The checkpoints of ``spec``: one path, or several joined by '+' (a file whose own name holds a '+'
    is one member)."""
    if os.path.exists(spec) or SEPARATOR not in spec:
        return [spec]
    paths = spec.split(SEPARATOR)
    if any(not p for p in paths):
        raise MagicError(f"'{spec}': an ensemble joins checkpoints with '+', with no empty member")
    return paths


def mean_score(scores: Sequence[ChildScore]) -> ChildScore:
    """One child's score under an ensemble: the members' mean loss, accuracy and per-sentence sums."""
    return ChildScore(loss=float(np.mean([s.loss for s in scores])),
                      accuracy=float(np.mean([s.accuracy for s in scores])),
                      per_sentence=np.mean([s.per_sentence for s in scores], axis=0))


class Ensemble:
    """Super-net checkpoints loaded for scoring (``load``: a path -> (model, task, space, batches)),
    scoring children as one estimator."""

    def __init__(self, spec: str, load: Callable):
        self.checkpoints = members(spec)
        self.loaded = [load(path) for path in self.checkpoints]
        self.model, self.task, self.space, self.batches = self.loaded[0]
        for path, (_, _, space, _) in zip(self.checkpoints[1:], self.loaded[1:]):
            if space != self.space:
                raise MagicError(f"the ensemble's super-nets search different spaces: {path} is not "
                                 f"{self.space.describe()} as {self.checkpoints[0]} is")

    def __len__(self) -> int:
        return len(self.loaded)

    def score(self, children: Sequence[Child]) -> List[ChildScore]:
        per_member = [score_children(model, model, children, batches) for model, _, _, batches in self.loaded]
        return [mean_score(scores) for scores in zip(*per_member)]
