"""The anchor child of MAGIC-A: the top-performing child others align to.

Two policies (Sec. 4 and Fig. 3b/c):

* ``best``: keep the best child found so far; every ``--anchor-eval-interval``
  updates the child just trained and the anchor are scored on the same
  validation slice with the current weights, and the child replaces the anchor
  when it validates better.
* ``top-p``: at each epoch end, score N random children (and the anchor); the
  anchor becomes the child ranked at the top p%, and is kept while it stays
  within the top (p - r)% .. (p + r)% of later epochs' rankings.

The anchor's state is a plain dict inside the model's ``search_state``, so it is
saved in every checkpoint and restored on resume.
"""

from typing import Dict, List, Optional, Sequence

from .samplers import STREAM_ANCHOR, Allowed, rng_for, uniform_child
from .space import Child, SearchSpace

POLICIES = ("best", "top-p")


class Anchor:
    def __init__(self, space: SearchSpace, state: Dict, seed: int, initial: Optional[Child] = None):
        self.space = space
        self.state = state
        self.seed = seed
        if "arch" not in state:
            child = initial if initial is not None else uniform_child(space, rng_for(seed, STREAM_ANCHOR))
            state.update(arch=space.format(child), score=None, replacements=0)

    @property
    def child(self) -> Child:
        return self.space.parse(self.state["arch"])

    @property
    def score(self) -> Optional[float]:
        return self.state.get("score")

    def _replace(self, child: Child, score: float) -> None:
        self.state.update(arch=self.space.format(child), score=score, replacements=self.state["replacements"] + 1)

    def restrict(self, allowed: Allowed, epoch: int) -> bool:
        """After the space shrank: an anchor that uses a removed operator is re-drawn
        inside the space (seeded); returns whether it changed."""
        if allowed is None or all(c in options for c, options in zip(self.child, allowed)):
            return False
        child = uniform_child(self.space, rng_for(self.seed, STREAM_ANCHOR, 1_000_000 + epoch), allowed)
        self.state.update(arch=self.space.format(child), score=None)
        return True

    def consider(self, candidate: Child, candidate_score: float, anchor_score: float) -> bool:
        """``best`` policy: replace the anchor if the candidate validates better."""
        self.state["score"] = anchor_score
        if tuple(candidate) != self.child and candidate_score > anchor_score:
            self._replace(candidate, candidate_score)
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
