"""Ensembles: several super-nets (the seeds of one method, or snapshots of one
run) as one estimator of a child.

The seeds of one method disagree about the children (tau sd 0.05-0.10 between
seeds at CPU scale); averaging their shared-weight losses is a cheap variance
reduction. ``search`` and ``rank correlate`` take an ensemble wherever they take
a super-net checkpoint, its members joined by ``+``:

    fairseq-magic search --checkpoint seed1/checkpoint_last.pt+seed2/checkpoint_last.pt ...
    fairseq-magic rank correlate --checkpoints spos1.pt+spos2.pt fair1.pt ...

A child's ensemble score is the mean over the members that hold it of its
masked-LM loss and accuracy, each member scoring the same validation sentences
with the same masks. A one-shot super-net holds every child; a few-shot
sub-super-net (``search/few_shot.py``) only those of its group, so the
sub-super-nets of one split, joined by '+', score each child with its own:

    fairseq-magic search --checkpoint few/sub0/checkpoint_last.pt+few/sub1/checkpoint_last.pt ...

Every member must search the same space; the sub-super-nets must split the same
layer and, unless a one-shot member is among them, hold all of its candidates.
"""

import os
from typing import Callable, List, Sequence

import numpy as np

from ..errors import MagicError
from ..space import Child
from .few_shot import holds
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
        self.splits = [model.search_state.split for model, _, _, _ in self.loaded]
        for path, split in zip(self.checkpoints, self.splits):
            if split is not None and not (
                    isinstance(split, dict) and isinstance(split.get("layer"), int)
                    and 0 <= split["layer"] < self.space.num_layers and isinstance(split.get("group"), list)
                    and all(isinstance(c, int) for c in split["group"])):
                raise MagicError(f"{path} records a malformed few-shot split: {str(split)[:80]}")
        self._check_splits()

    def _check_splits(self) -> None:
        """Sub-super-nets split one layer, and with the one-shot members they hold every child."""
        split = [(path, s) for path, s in zip(self.checkpoints, self.splits) if s is not None]
        if not split:
            return
        first, layer = split[0][0], split[0][1]["layer"]
        for path, s in split:
            if s["layer"] != layer:
                raise MagicError(f"the sub-super-nets split different layers: {path} layer {s['layer']}, "
                                 f"{first} layer {layer}")
        if len(split) == len(self.checkpoints):
            missing = set(self.space.layer_options[layer]) - {c for _, s in split for c in s["group"]}
            if missing:
                names = ", ".join(self.space.candidates[c].name for c in sorted(missing))
                raise MagicError(f"no sub-super-net of {SEPARATOR.join(self.checkpoints)} holds {names} in layer "
                                 f"{layer}: join every sub-super-net of the split with '{SEPARATOR}'")

    def __len__(self) -> int:
        return len(self.loaded)

    def holders(self, child: Child) -> List[int]:
        """The members that score ``child`` (all of them, unless some are sub-super-nets)."""
        found = [i for i, split in enumerate(self.splits) if holds(split, child)]
        if not found:
            raise MagicError(f"no super-net of {SEPARATOR.join(self.checkpoints)} holds {self.space.format(child)}")
        return found

    def checkpoint_of(self, child: Child) -> str:
        """The first member that holds ``child``: where its inherited weights come from."""
        return self.checkpoints[self.holders(child)[0]]

    def score(self, children: Sequence[Child]) -> List[ChildScore]:
        routes = [self.holders(c) for c in children]
        scored: List[List[ChildScore]] = [[] for _ in children]
        for i, (model, _, _, batches) in enumerate(self.loaded):
            mine = [n for n, route in enumerate(routes) if i in route]
            if mine:
                for n, s in zip(mine, score_children(model, model, [children[n] for n in mine], batches)):
                    scored[n].append(s)
        return [mean_score(scores) for scores in scored]
