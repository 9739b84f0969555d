"""Training shares: how often the super-net trained each (layer, operator) pair,
and each pair of operators in adjacent layers.

A weight-sharing estimate is fair only if every operator got about the same
training: a child made of over-trained operators looks better than it is.
``TrainingShares`` counts the optimizer steps that moved every (layer, operator)
pair, and the steps that trained every (layer l operator a, layer l+1 operator
b) combination, since interference acts between adjacent layers. A step counts
what it moved, not the forwards before it: one FairNAS update of 4 micro-batches
(4 children) moves, and counts once, every operator any of the 4 used. Its figures:

* ``share_sd``: the standard deviation, over the (layer, operator) pairs still
  in the space, of ``count / fair - 1``, where a layer's fair share is the
  mean count of its operators (0 for a perfectly even training; uniform
  sampling gives about ``sqrt((C - 1) / T)`` after T updates of C candidates);
* ``adjacent_share_sd``: the same over the combinations of adjacent layers;
* ``excess(layer)``: each operator's count minus the layer's fair share, which
  the fair gradual walk (training/samplers.py) steers by.

The counts live in the ``SearchState`` (``visits``, plain JSON) that the
checkpoint carries, so they survive a resume and are the same on every rank.
"""

from typing import Dict, Optional, Sequence

import numpy as np

from ..space import Child, SearchSpace

Allowed = Optional[Sequence[Sequence[int]]]


class TrainingShares:
    """Counts of optimizer steps, per (layer, operator) and per adjacent combination."""

    def __init__(self, space: SearchSpace, saved: Optional[Dict] = None):
        self.space = space
        n, c = space.num_layers, space.num_candidates
        self.layer = np.zeros((n, c), dtype=np.int64)
        self.adjacent = np.zeros((max(n - 1, 0), c, c), dtype=np.int64)
        if saved:
            layer, adjacent = np.asarray(saved["layer"], dtype=np.int64), np.asarray(saved["adjacent"], dtype=np.int64)
            if layer.shape != self.layer.shape or adjacent.shape != self.adjacent.shape:
                raise ValueError(f"training counts of shape {layer.shape} do not fit a space of {n} layers and "
                                 f"{c} candidates")
            self.layer, self.adjacent = layer, adjacent

    def to_dict(self) -> Dict:
        return {"layer": self.layer.tolist(), "adjacent": self.adjacent.tolist()}

    @property
    def total(self) -> int:
        """Operator steps counted in a layer: one per update that steps one child, C for a
        FairNAS update whose C children use C operators of every layer."""
        return int(self.layer[0].sum()) if len(self.layer) else 0

    def add(self, child: Child) -> None:
        """One optimizer step that moved ``child``'s operators."""
        self.add_step([child])

    def add_step(self, children: Sequence[Child]) -> None:
        """One optimizer step that moved the operators of ``children`` (FairNAS: the
        window's children, one per micro-batch): each (layer, operator) any of them
        uses counts once, as does each adjacent combination any of them runs."""
        pairs = {(layer, c) for child in children for layer, c in enumerate(child)}
        combos = {(layer, a, b) for child in children for layer, (a, b) in enumerate(zip(child, child[1:]))}
        for layer, c in pairs:
            self.layer[layer, c] += 1
        for layer, a, b in combos:
            self.adjacent[layer, a, b] += 1

    # ------------------------------------------------------------ figures
    def options(self, allowed: Allowed = None) -> Sequence[Sequence[int]]:
        return allowed or self.space.layer_options

    def excess(self, layer: int, allowed: Allowed = None) -> np.ndarray:
        """Each candidate's count minus the mean count of the layer's allowed candidates."""
        options = list(self.options(allowed)[layer])
        return self.layer[layer] - self.layer[layer, options].mean()

    def adjacent_excess(self, layer: int, allowed: Allowed = None) -> np.ndarray:
        """Each combination (a in ``layer``, b in ``layer + 1``) minus the mean over the allowed ones."""
        options = self.options(allowed)
        block = self.adjacent[layer][np.ix_(list(options[layer]), list(options[layer + 1]))]
        return self.adjacent[layer] - block.mean()

    def shares(self, allowed: Allowed = None) -> np.ndarray:
        """``count / fair - 1`` of every allowed (layer, operator) pair, layer by layer."""
        out = []
        for layer, options in enumerate(self.options(allowed)):
            counts = self.layer[layer, list(options)].astype(float)
            if counts.mean() > 0:
                out.extend(counts / counts.mean() - 1)
        return np.array(out)

    def adjacent_shares(self, allowed: Allowed = None) -> np.ndarray:
        options = self.options(allowed)
        out = []
        for layer in range(len(self.adjacent)):
            block = self.adjacent[layer][np.ix_(list(options[layer]), list(options[layer + 1]))].astype(float)
            if block.mean() > 0:
                out.extend((block / block.mean() - 1).ravel())
        return np.array(out)

    def share_sd(self, allowed: Allowed = None) -> float:
        s = self.shares(allowed)
        return float(s.std()) if len(s) else 0.0

    def adjacent_share_sd(self, allowed: Allowed = None) -> float:
        s = self.adjacent_shares(allowed)
        return float(s.std()) if len(s) else 0.0

    def over_training(self, child: Child) -> float:
        """The summed share excess of the child's (layer, operator) pairs (0: trained as fairly as any)."""
        total = 0.0
        for layer, c in enumerate(child):
            options = list(self.space.layer_options[layer])
            mean = self.layer[layer, options].mean()
            if mean > 0:
                total += self.layer[layer, c] / mean - 1
        return total

    def summary(self, allowed: Allowed = None) -> Dict[str, float]:
        return {"operator_steps": self.total, "share_sd": self.share_sd(allowed),
                "adjacent_share_sd": self.adjacent_share_sd(allowed)}
