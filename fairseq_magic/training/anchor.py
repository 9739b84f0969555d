"""MAGIC-A's anchor: the top-performing child the others align to, its options,
its rules and its decisions (``training/alignment.py`` owns the alignment term
and asks this module for the anchor's child).

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

When: ``Alignment`` calls ``begin_epoch`` (top-p), ``choose_first`` (the update
alignment starts), ``end_update`` (best) and ``restrict`` (after shrinking).
The anchor's state is typed, ``AnchorState`` in ``SearchState.anchor``
(models/search_state.py), so it is saved in every checkpoint and restored on
resume; it is read afresh on every access, so a load that replaces the search
state's contents is seen. Its random draws are STREAM_ANCHOR's (``streams.py``).
"""

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics

from ..models.search_state import AnchorState, SearchState
from ..models.supernet import resolve_child, unwrap
from ..search.scoring import score_children
from ..space import Child, SearchSpace
from ..streams import ANCHOR_AFTER_SHRINKING, ANCHOR_FIRST_CHILDREN, STREAM_ANCHOR, rng_for
from .samplers import Allowed, distinct_children, uniform_child

logger = logging.getLogger(__name__)

POLICIES = ("best", "top-p")


@dataclass
class AnchorConfig(FairseqDataclass):
    anchor_policy: ChoiceEnum(list(POLICIES)) = field(
        default="best", metadata={"help": "best: replace the anchor by a better-validating child; "
                                  "top-p: the top p%% child of N evaluated at each epoch end"}
    )
    anchor_arch: str = field(
        default="", metadata={"help": "first anchor (architecture string or JSON file); default: the best of "
                              "--anchor-init-children scored children"}
    )
    anchor_init_children: int = field(
        default=100, metadata={"range": "[0, inf)",
                               "help": "children scored when alignment starts; the best becomes the first anchor "
                               "(top-p policy: the one at the top p%%); 0: a seeded random child"}
    )
    anchor_metric: ChoiceEnum(["accuracy", "loss"]) = field(
        default="accuracy", metadata={"help": "Val(child): masked-LM accuracy (paper), or negative loss"}
    )
    anchor_eval_interval: int = field(
        default=100, metadata={"range": "[1, inf)",
                               "help": "best policy: score the trained child against the anchor every N updates"}
    )
    anchor_replace_z: float = field(
        default=2.0, metadata={"range": "[0, inf)",
                               "help": "best policy: the child replaces the anchor when its per-sentence improvement "
                               "exceeds z standard errors (paired test on the same sentences; 0: any improvement)"}
    )
    anchor_top_p: float = field(default=10.0, metadata={"range": "(0, 100]", "help": "top-p policy: p (percent)"})
    anchor_top_r: float = field(default=10.0, metadata={"range": "[0, 100]",
                                                        "help": "top-p policy: keep the anchor within p +/- r percent"})
    anchor_top_children: int = field(default=100, metadata={"range": "[1, inf)",
                                                            "help": "top-p policy: children evaluated per epoch"})


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
    """The anchor of one run. The rules (``set``, ``consider``, ``choose_top_p``,
    ``restrict``'s re-draw) need only the space and the state; the decisions,
    which score children with the shared weights, need ``cfg`` (an ``AnchorConfig``)
    and ``scoring_batches()`` (this rank's share of the scoring sentences)."""

    def __init__(self, space: SearchSpace, search_state: SearchState, seed: int, cfg: Optional[AnchorConfig] = None,
                 scoring_batches: Optional[Callable[[], List[dict]]] = None):
        self.space, self.search_state, self.seed = space, search_state, seed
        self.cfg = cfg if cfg is not None else AnchorConfig()
        self.given = resolve_child(self.cfg.anchor_arch, space) if self.cfg.anchor_arch else None  # fails early
        self._scoring_batches = scoring_batches

    @property
    def state(self) -> AnchorState:
        return self.search_state.anchor

    @property
    def chosen(self) -> bool:
        return self.state.arch is not None

    @property
    def child(self) -> Child:
        return self.space.parse(self.state.arch)

    @property
    def score(self) -> Optional[float]:
        return self.state.score

    @property
    def allowed(self) -> Allowed:
        """Each layer's candidates left by progressive shrinking (None: all)."""
        return self.search_state.allowed

    def describe(self) -> str:
        cfg = self.cfg
        first = (self.space.format(self.given) if self.given is not None else
                 f"the best of {cfg.anchor_init_children} scored children" if cfg.anchor_init_children else
                 "a random child")
        rule = (f"replaced by a trained child better by > {cfg.anchor_replace_z:g} standard errors, checked every "
                f"{cfg.anchor_eval_interval} updates" if cfg.anchor_policy == "best" else
                f"top {cfg.anchor_top_p:g} +/- {cfg.anchor_top_r:g}% of {cfg.anchor_top_children} children at epoch ends")
        return f"anchor (first: {first}; {rule}; by {cfg.anchor_metric})"

    # ------------------------------------------------------------ rules
    def set(self, child: Child, score: Optional[float] = None) -> None:
        """The first anchor (given, drawn or chosen from a scored set)."""
        self.state.arch, self.state.score = self.space.format(child), score

    def _replace(self, child: Child, score: float) -> None:
        self.set(child, score)
        self.state.replacements += 1

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
            self.state.percentile = 100.0 * position / max(len(order) - 1, 1)
        return chosen

    def consider(self, candidate: Child, comparison: Comparison, z: float) -> bool:
        """``best`` policy: replace the anchor if the candidate is better by more than
        ``z`` standard errors (z = 0: by any margin)."""
        self.state.score = comparison.anchor
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
        self.state.percentile = 100.0 * position / last
        if p - r <= self.state.percentile <= p + r:
            self.state.score = scores[order[position]]
            return False
        chosen = order[min(len(order) - 1, round(p / 100.0 * last))]
        self._replace(children[chosen], scores[chosen])
        self.state.percentile = 100.0 * order.index(chosen) / last
        return True

    # ------------------------------------------------------------ decisions (with the shared weights)
    def begin_epoch(self, model, epoch: int) -> None:
        """``top-p``: the choice at an epoch end (the next one's start), once per epoch, also across a resume."""
        if (self.cfg.anchor_policy == "top-p" and epoch > 1 and self.chosen
                and self.search_state.top_p_epoch != epoch):
            self._choose_top_p(model, epoch)
            self.search_state.top_p_epoch = epoch

    def end_update(self, model, update_num: int, child: Child) -> None:
        """``best``: the trained child against the anchor, every ``--anchor-eval-interval`` updates."""
        if self.cfg.anchor_policy == "best" and (update_num + 1) % self.cfg.anchor_eval_interval == 0:
            self._consider(model, child, update_num)

    def choose_first(self, model, update_num: int, key: int = 0) -> None:
        """The first anchor: given, a seeded random child, or the best of the scored children."""
        if self.given is not None:
            self.set(self.given)
            logger.info(f"anchor: {self.space.format(self.given)} (given by --anchor-arch)")
            return
        if not self.cfg.anchor_init_children:
            self.set(self.random_child(self.allowed, key))
            logger.info(f"anchor: {self.state.arch} (a random child: --anchor-init-children 0)")
            return
        start = time.perf_counter()
        children = self.initial_children(self.cfg.anchor_init_children, self.allowed, key)
        scores = [s.value(self.cfg.anchor_metric) for s in self._score(model, children)]
        chosen = self.choose_initial(children, scores, self.cfg.anchor_policy, self.cfg.anchor_top_p)
        where = "the best" if self.cfg.anchor_policy == "best" else f"the one ranked at {self.cfg.anchor_top_p:g}%"
        logger.info(
            f"anchor: {self.space.format(children[chosen])}, {where} of {len(children)} children scored with the "
            f"shared weights at update {update_num} ({self._fmt(scores[chosen])}; best {self._fmt(max(scores))}, "
            f"median {self._fmt(float(np.median(scores)))}) in {time.perf_counter() - start:.2f}s"
        )

    def restrict(self, model, update_num: int, epoch: int) -> None:
        """After progressive shrinking: an anchor using a removed operator is re-drawn
        inside the space (seeded), then chosen again there as the first one was."""
        allowed = self.allowed
        if not self.chosen or allowed is None or all(c in options for c, options in zip(self.child, allowed)):
            return
        self.set(self.random_child(allowed, ANCHOR_AFTER_SHRINKING + epoch))
        if self.cfg.anchor_init_children and self.given is None:
            self.choose_first(model, update_num, key=epoch)
        logger.info(f"anchor chosen again inside the shrunk space: {self.space.format(self.child)}")

    def _score(self, model, children: Sequence[Child]):
        return score_children(model, unwrap(model), children, self._scoring_batches())

    def _fmt(self, value: float) -> str:
        """A Val score (higher is better) in the metric's own units."""
        return f"loss {-value:.4f}" if self.cfg.anchor_metric == "loss" else f"accuracy {value:.4f}"

    def _consider(self, model, candidate: Child, update_num: int) -> None:
        start = time.perf_counter()
        cand, anchor = self._score(model, [candidate, self.child])
        metric = self.cfg.anchor_metric
        comparison = paired_comparison(cand.sentence_values(metric), anchor.sentence_values(metric))
        previous = self.space.format(self.child)
        replaced = self.consider(candidate, comparison, self.cfg.anchor_replace_z)
        elapsed = time.perf_counter() - start
        metrics.log_scalar("anchor_score", self.score, weight=0, round=4)
        metrics.log_scalar("anchor_eval_s", elapsed, weight=0, round=3)
        z = comparison.diff / comparison.se if comparison.se > 0 else math.copysign(math.inf, comparison.diff)
        logger.info(
            f"anchor {'replaced by' if replaced else 'kept against'} {self.space.format(candidate)} at update "
            f"{update_num + 1}: {self._fmt(comparison.candidate)} vs anchor {previous} {self._fmt(comparison.anchor)} "
            f"on {comparison.sentences} sentences; improvement {comparison.diff:+.4f} +/- {comparison.se:.4f} "
            f"({z:+.1f} standard errors, {'>' if replaced else 'not >'} {self.cfg.anchor_replace_z:g}); {elapsed:.2f}s"
        )

    def _choose_top_p(self, model, epoch: int) -> None:
        start = time.perf_counter()
        children = self.top_p_children(epoch, self.cfg.anchor_top_children, self.allowed)
        scores = [s.value(self.cfg.anchor_metric) for s in self._score(model, children)]
        changed = self.choose_top_p(children, scores, self.cfg.anchor_top_p, self.cfg.anchor_top_r)
        logger.info(
            f"anchor {'now' if changed else 'kept'} {self.space.format(self.child)} at the top "
            f"{self.state.percentile:.1f}% of {len(children)} children "
            f"(p={self.cfg.anchor_top_p} +/- {self.cfg.anchor_top_r}); scored in {time.perf_counter() - start:.2f}s"
        )
