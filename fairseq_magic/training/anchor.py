"""The anchor child of MAGIC-A: the top-performing child others align to.

The first anchor is top-performing (Sec. 4: "directly pick a top-performing
anchor child"): the best of N children scored with the shared weights when
alignment starts (or, under ``top-p``, the child at the top p% of them).
Then one of two policies (Sec. 4 and Fig. 3b/c):

* ``best``: keep the best child found so far; every ``--anchor-eval-interval``
  updates the child just trained and the anchor are scored on the same
  validation sentences with the current weights, and the child replaces the
  anchor when it is better by a margin that noise does not explain: a paired
  test on per-sentence scores, the mean improvement above z standard errors.
* ``top-p``: at each epoch end, score N random children (and the anchor); the
  anchor becomes the child ranked at the top p%, and is kept while it stays
  within the top (p - r)% .. (p + r)% of later epochs' rankings.

The anchor's state is a plain dict, ``SearchState.anchor`` (models/search_state.py),
so it is saved in every checkpoint and restored on resume.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..models.search_state import SearchState
from ..space import Child, SearchSpace
from ..streams import ANCHOR_AFTER_SHRINKING, ANCHOR_FIRST_CHILDREN, STREAM_ANCHOR, rng_for
from .samplers import Allowed, distinct_children, uniform_child

POLICIES = ("best", "top-p")


@dataclass
class Comparison:
    """A trained child against the anchor on the same sentences (higher is better)."""

    candidate: float  # the candidate's score
    anchor: float  # the anchor's score
    diff: float  # mean per-sentence improvement of the candidate over the anchor
    se: float  # its standard error
    sentences: int

    def beats(self, z: float) -> bool:
        return self.diff > 0 and self.diff > z * self.se


def paired_comparison(candidate: Sequence[float], anchor: Sequence[float]) -> Comparison:
    """Paired difference of per-sentence scores (the same sentences, the same masks)."""
    c, a = np.asarray(candidate, dtype=float), np.asarray(anchor, dtype=float)
    d = c - a
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
    return Comparison(candidate=float(c.mean()), anchor=float(a.mean()), diff=float(d.mean()), se=se, sentences=len(d))


class Anchor:
    """The anchor, kept in ``search_state.anchor`` (read afresh on every access, so
    a checkpoint load that replaces the search state's contents is seen)."""

    def __init__(self, space: SearchSpace, search_state: SearchState, seed: int):
        self.space = space
        self.search_state = search_state
        self.seed = seed

    @property
    def state(self) -> Dict:
        return self.search_state.anchor

    @property
    def chosen(self) -> bool:
        return "arch" in self.state

    @property
    def child(self) -> Child:
        return self.space.parse(self.state["arch"])

    @property
    def score(self) -> Optional[float]:
        return self.state.get("score")

    def set(self, child: Child, score: Optional[float] = None) -> None:
        """The first anchor (given, drawn or chosen from a scored set)."""
        self.state.update(arch=self.space.format(child), score=score, replacements=self.state.get("replacements", 0))

    def _replace(self, child: Child, score: float) -> None:
        self.state.update(arch=self.space.format(child), score=score, replacements=self.state["replacements"] + 1)

    def random_child(self, allowed: Allowed = None, key: int = 0) -> Child:
        return uniform_child(self.space, rng_for(self.seed, STREAM_ANCHOR, key), allowed)

    def initial_children(self, count: int, allowed: Allowed = None, key: int = 0) -> List[Child]:
        """``count`` distinct seeded children (fewer if the space is smaller) to choose the first anchor from."""
        return distinct_children(self.space, rng_for(self.seed, STREAM_ANCHOR, ANCHOR_FIRST_CHILDREN + key), count, allowed)

    def choose_initial(self, children: Sequence[Child], scores: Sequence[float], policy: str, p: float) -> int:
        """Make the best scored child the anchor (``top-p``: the one at the top p%); returns its index."""
        order = sorted(range(len(children)), key=lambda i: -scores[i])  # best first
        position = 0 if policy == "best" else min(len(order) - 1, round(p / 100.0 * max(len(order) - 1, 1)))
        chosen = order[position]
        self.set(children[chosen], scores[chosen])
        if policy != "best":
            self.state["percentile"] = 100.0 * position / max(len(order) - 1, 1)
        return chosen

    def restrict(self, allowed: Allowed, epoch: int) -> bool:
        """After the space shrank: whether the anchor uses a removed operator. If it
        does and no better rule applies, it is re-drawn inside the space (seeded)."""
        if allowed is None or all(c in options for c, options in zip(self.child, allowed)):
            return False
        self.state.update(arch=self.space.format(self.random_child(allowed, ANCHOR_AFTER_SHRINKING + epoch)), score=None)
        return True

    def consider(self, candidate: Child, comparison: Comparison, z: float) -> bool:
        """``best`` policy: replace the anchor if the candidate is better by more than
        ``z`` standard errors (z = 0: by any margin)."""
        self.state["score"] = comparison.anchor
        if tuple(candidate) != self.child and comparison.beats(z):
            self._replace(candidate, comparison.candidate)
            return True
        return False

    def top_p_children(self, epoch: int, count: int, allowed: Allowed = None) -> List[Child]:
        """The random children evaluated at an epoch end, the anchor appended."""
        rng = rng_for(self.seed, STREAM_ANCHOR, epoch)
        children = [uniform_child(self.space, rng, allowed) for _ in range(count)]
        if self.child not in children:
            children.append(self.child)
        return children

    def choose_top_p(self, children: Sequence[Child], scores: Sequence[float], p: float, r: float) -> bool:
        """``top-p`` policy; returns whether the anchor changed."""
        order = sorted(range(len(children)), key=lambda i: -scores[i])  # best first
        last = max(len(children) - 1, 1)
        position = order.index(list(children).index(self.child))
        percentile = 100.0 * position / last
        self.state["percentile"] = percentile
        if p - r <= percentile <= p + r:
            self.state["score"] = scores[order[position]]
            return False
        chosen = order[min(len(order) - 1, round(p / 100.0 * last))]
        self._replace(children[chosen], scores[chosen])
        self.state["percentile"] = 100.0 * order.index(chosen) / last
        return True
