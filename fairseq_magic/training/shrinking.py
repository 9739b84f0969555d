"""Progressive shrinking of the search space during super-net training (Sec. 5.1,
after NAS-BERT): at each epoch end, delete the least promising (layer, operator)
pairs until one child is left.

A pair's promise is the mean validation loss of the scored children that use
it: M children are drawn uniformly from the current space (seeded by epoch),
each is scored on the same validation slice, and the ``per_epoch`` pairs with
the highest mean loss are removed. A layer always keeps at least one operator,
and a pair no scored child used is kept (there is no evidence against it).
The space is a list of allowed candidate indices per layer, kept in the
checkpoint's search state.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from ..space import Child, SearchSpace


@dataclass
class Removal:
    layer: int
    candidate: int
    mean_loss: float
    children: int  # scored children that used the pair


def full_space(space: SearchSpace) -> List[List[int]]:
    return [list(options) for options in space.layer_options]


def pair_losses(children: Sequence[Child], losses: Sequence[float]) -> Dict[Tuple[int, int], Tuple[float, int]]:
    """(layer, candidate) -> (mean loss of the children using it, how many there were)."""
    sums: Dict[Tuple[int, int], List[float]] = {}
    for child, loss in zip(children, losses):
        for layer, c in enumerate(child):
            sums.setdefault((layer, c), []).append(loss)
    return {pair: (sum(v) / len(v), len(v)) for pair, v in sums.items()}


def choose_removals(allowed: Sequence[Sequence[int]], stats, per_epoch: int) -> List[Removal]:
    """The ``per_epoch`` worst pairs that can go, worst first."""
    remaining = {layer: len(options) for layer, options in enumerate(allowed)}
    ranked = sorted(
        ((pair, mean, n) for pair, (mean, n) in stats.items() if pair[1] in allowed[pair[0]]),
        key=lambda item: (-item[1], item[0]),
    )
    removals: List[Removal] = []
    for (layer, c), mean, n in ranked:
        if len(removals) == per_epoch:
            break
        if remaining[layer] > 1:
            remaining[layer] -= 1
            removals.append(Removal(layer, c, mean, n))
    return removals


def apply_removals(allowed: Sequence[Sequence[int]], removals: Sequence[Removal]) -> List[List[int]]:
    gone = {(r.layer, r.candidate) for r in removals}
    return [[c for c in options if (layer, c) not in gone] for layer, options in enumerate(allowed)]


def is_single_child(allowed: Sequence[Sequence[int]]) -> bool:
    return all(len(options) == 1 for options in allowed)
