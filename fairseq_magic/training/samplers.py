"""Samplers: which child the super-net trains at each update.

A sampler is a pure function of (seed, update number, micro-batch, previous
child, training counts so far). Every rank calls it with the same arguments, so
all of them train the same child without communicating, and a resumed run
(which restores the update number, the previous child and the counts, all in
the ``SearchState``) samples exactly what the uninterrupted run would have.

==================  ==========================================================
``uniform``         SPOS (Guo et al. 2020): a fresh uniform child per update.
``gradual``         MAGIC-T (Xu et al. 2022): k layers change per update, each
                    to a uniform other operator; a random walk.
``fair``            FairNAS strict fairness (Chu et al. 2021): every layer takes
                    each of its C candidates once per window of C children;
                    with ``--update-freq C`` a window is one update, one child
                    per micro-batch.
``fair-gradual``    the fair gradual walk (this project): k layers change per
                    update as in MAGIC-T, but the move is drawn to keep every
                    (layer, operator) pair and every adjacent combination near
                    its fair share of training.
==================  ==========================================================
"""

import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..space import Child, SearchSpace, SpaceError
from ..streams import STREAM_FAIR_WINDOW, STREAM_INITIAL_CHILD, STREAM_TRAIN, STREAM_VALID_CHILDREN, rng_for
from .training_share import TrainingShares

# The candidates still allowed in each layer of a shrunk space (None: all of them).
Allowed = Optional[Sequence[Sequence[int]]]


def uniform_child(space: SearchSpace, rng: np.random.Generator, allowed: Allowed = None) -> Child:
    """Every layer's operator i.i.d. uniform over its (allowed) candidates (SPOS)."""
    if allowed is None and not space.groups:
        return tuple(int(c) for c in rng.integers(0, space.num_candidates, size=space.num_layers))
    return tuple(int(options[rng.integers(len(options))]) for options in allowed or space.layer_options)


def count_children(space: SearchSpace, allowed: Allowed = None) -> int:
    if allowed is None:
        return space.num_children
    return int(np.prod([len(options) for options in allowed], dtype=object))


class Sampler:
    """Base class: ``sampler(update_num, previous, allowed, micro, shares) -> child``."""

    name = ""
    per_micro_batch = False  # True: each micro-batch of an update (--update-freq) trains its own child

    def __init__(self, space: SearchSpace, seed: int):
        self.space = space
        self.seed = seed

    def __call__(self, update_num: int, previous: Optional[Child] = None, allowed: Allowed = None,
                 micro: int = 0, shares: Optional[TrainingShares] = None) -> Child:
        """The child of ``update_num`` (and of its micro-batch ``micro`` when
        ``per_micro_batch``); ``allowed`` restricts each layer (a shrunk space);
        ``shares`` holds the training counts of the updates before."""
        raise NotImplementedError


class UniformSampler(Sampler):
    """SPOS (Guo et al. 2020): a fresh uniform child at every update."""

    name = "uniform"

    def __call__(self, update_num, previous=None, allowed=None, micro=0, shares=None) -> Child:
        return uniform_child(self.space, rng_for(self.seed, STREAM_TRAIN, update_num), allowed)


def modify(child: Child, k: int, num_candidates: int, rng: np.random.Generator, allowed: Allowed = None) -> Child:
    """Replace the operators of ``k`` distinct layers, each by a different candidate.

    In a shrunk space only layers with a choice left can change (at most k of
    them), each to another allowed candidate."""
    new = list(child)
    if allowed is None:
        for layer in rng.choice(len(child), size=k, replace=False):
            other = int(rng.integers(0, num_candidates - 1))
            new[layer] = other + (other >= new[layer])  # uniform over the C-1 others
        return tuple(new)
    open_layers = [layer for layer, options in enumerate(allowed) if len(options) > 1]
    for layer in rng.choice(open_layers, size=min(k, len(open_layers)), replace=False) if open_layers else []:
        others = [c for c in allowed[layer] if c != new[layer]]
        new[layer] = int(others[rng.integers(len(others))])
    return tuple(new)


class GradualSampler(Sampler):
    """MAGIC-T (Sec. 4): each child differs from the previous one in exactly k layers.

    A random walk on the architecture graph whose stationary distribution is
    uniform; the first child (or one after a restart without a previous
    child) is uniform.
    """

    name = "gradual"

    def __init__(self, space: SearchSpace, seed: int, gradual_k: int = 1):
        super().__init__(space, seed)
        if not 1 <= gradual_k <= space.num_layers:
            raise SpaceError(f"--gradual-k must be between 1 and the number of layers ({space.num_layers}), got {gradual_k}")
        open_layers = sum(len(options) > 1 for options in space.layer_options)
        if open_layers < gradual_k:
            raise SpaceError(f"gradual sampling changes {gradual_k} layers per update; "
                             f"{open_layers} layers have more than one candidate")
        self.k = gradual_k

    def start(self, update_num: int, previous: Optional[Child], allowed: Allowed):
        """(the child the walk moves from, the update's generator, allowed) or, when
        the walk starts afresh, (its uniform first child, None, allowed)."""
        if allowed is None and self.space.groups:
            allowed = self.space.layer_options
        if previous is None:
            return uniform_child(self.space, rng_for(self.seed, STREAM_INITIAL_CHILD), allowed), None, allowed
        rng = rng_for(self.seed, STREAM_TRAIN, update_num)
        previous = self.space.validate(previous)
        if allowed is not None and any(c not in options for c, options in zip(previous, allowed)):
            # the space was just shrunk under the walk: removed operators are re-drawn
            fresh = uniform_child(self.space, rng, allowed)
            previous = tuple(c if c in options else f for c, f, options in zip(previous, fresh, allowed))
        return previous, rng, allowed

    def __call__(self, update_num, previous=None, allowed=None, micro=0, shares=None) -> Child:
        previous, rng, allowed = self.start(update_num, previous, allowed)
        if rng is None:
            return previous
        return modify(previous, self.k, self.space.num_candidates, rng, allowed)


class FairSampler(Sampler):
    """FairNAS strict fairness (Chu et al. 2021, Alg. 1).

    Children are numbered by micro-batch, ``g = update * micro_batches + micro``.
    Layer l takes its C_l (allowed) candidates in a random order, a fresh
    permutation per window of C_l consecutive children, so over every window each
    candidate is trained exactly once. With ``--update-freq C`` a window is one
    update: the C children's gradients (one micro-batch each) are summed into
    one step, which is FairNAS's strict fairness; with ``--update-freq 1`` the
    window spans C updates (each update one child, the cost of SPOS). After
    progressive shrinking a layer's window restarts at its new size, so the
    first window after a shrink may be partial."""

    name = "fair"
    per_micro_batch = True

    def __init__(self, space: SearchSpace, seed: int, micro_batches: int = 1):
        super().__init__(space, seed)
        if micro_batches < 1:
            raise SpaceError(f"the fair sampler needs at least one micro-batch per update, got {micro_batches}")
        self.micro_batches = micro_batches

    @property
    def window(self) -> int:
        """Children in a window common to all layers (the least common multiple of their candidates)."""
        return math.lcm(*(len(options) for options in self.space.layer_options))

    def __call__(self, update_num, previous=None, allowed=None, micro=0, shares=None) -> Child:
        g = update_num * self.micro_batches + micro
        child = []
        for layer, options in enumerate(allowed or self.space.layer_options):
            window, position = divmod(g, len(options))
            order = rng_for(self.seed, STREAM_FAIR_WINDOW, layer, window).permutation(len(options))
            child.append(int(options[order[position]]))
        return tuple(child)


class FairGradualSampler(GradualSampler):
    """The fair gradual walk: MAGIC-T's k changes per update, chosen fairly.

    MAGIC-T's walk stays on an operator for runs of updates, so over a short
    run some (layer, operator) pairs get much more training than others, and a
    child made of over-trained operators is over-estimated. This walk still
    changes exactly k layers per update, but draws each move (layer l from its
    operator a to o) with probability proportional to ``exp(gain / tau)``:

        gain = excess(l, a) - excess(l, o)
               + beta * sum over the neighbours n of l (pair_excess(a, n) - pair_excess(o, n))

    where ``excess`` is a pair's training count minus its layer's fair share and
    ``pair_excess`` the same for the combination with the operator a neighbour
    layer holds now (TrainingShares). A layer whose operator has been trained
    beyond its share is the likeliest to move, to the operator that lags most and
    that pairs least often with its neighbours' operators. The draw is random
    (tau > 0), so the walk does not settle into a cycle that locks operators of
    neighbouring layers together; the counts stay within a few updates of fair
    (tests/test_samplers.py measures the bound over long runs)."""

    name = "fair-gradual"

    def __init__(self, space: SearchSpace, seed: int, gradual_k: int = 1, tau: float = 1.0, beta: float = 1.0):
        super().__init__(space, seed, gradual_k)
        self.tau, self.beta = tau, beta

    def __call__(self, update_num, previous=None, allowed=None, micro=0, shares=None) -> Child:
        previous, rng, allowed = self.start(update_num, previous, allowed)
        if rng is None:
            return previous
        shares = shares or TrainingShares(self.space)
        options = allowed or self.space.layer_options
        last = self.space.num_layers - 1
        child, moved = list(previous), set()
        excess = [shares.excess(layer, allowed) for layer in range(self.space.num_layers)]
        pairs = [shares.adjacent_excess(layer, allowed) for layer in range(last)]
        for _ in range(self.k):
            moves, gains = [], []
            for layer, layer_options in enumerate(options):
                if layer in moved:
                    continue
                a = child[layer]
                for o in layer_options:
                    if o == a:
                        continue
                    gain = excess[layer][a] - excess[layer][o]
                    if layer > 0:
                        left = pairs[layer - 1][child[layer - 1]]
                        gain += self.beta * (left[a] - left[o])
                    if layer < last:
                        right = pairs[layer][:, child[layer + 1]]
                        gain += self.beta * (right[a] - right[o])
                    moves.append((layer, o))
                    gains.append(gain)
            if not moves:  # fewer open layers than k in a shrunk space
                break
            gains = np.asarray(gains, dtype=float)
            weights = np.exp((gains - gains.max()) / self.tau)
            layer, o = moves[int(rng.choice(len(moves), p=weights / weights.sum()))]
            child[layer] = int(o)
            moved.add(layer)
        return tuple(child)


SAMPLERS: Dict[str, Callable[..., Sampler]] = {
    cls.name: cls for cls in (UniformSampler, GradualSampler, FairSampler, FairGradualSampler)
}
GRADUAL_SAMPLERS = (GradualSampler.name, FairGradualSampler.name)  # the samplers that take --gradual-k


def check_sampler(name: str, gradual_k: int = 1) -> None:
    """A sampler that exists, and --gradual-k only for the samplers that take it (SpaceError otherwise)."""
    if name not in SAMPLERS:
        raise SpaceError(f"unknown sampler '{name}' (choose from {', '.join(sorted(SAMPLERS))})")
    if gradual_k != 1 and name not in GRADUAL_SAMPLERS:
        raise SpaceError(f"--gradual-k is MAGIC-T's; it needs --sampler gradual or fair-gradual (the sampler is '{name}')")


def build_sampler(name: str, space: SearchSpace, seed: int, gradual_k: int = 1, micro_batches: int = 1) -> Sampler:
    check_sampler(name, gradual_k)
    if name in GRADUAL_SAMPLERS:
        return SAMPLERS[name](space, seed, gradual_k=gradual_k)
    if name == FairSampler.name:
        return FairSampler(space, seed, micro_batches=micro_batches)
    return SAMPLERS[name](space, seed)


def distinct_children(space: SearchSpace, rng: np.random.Generator, count: int, allowed: Allowed = None) -> List[Child]:
    """``count`` distinct uniform children, in the order drawn (fewer if the space is smaller)."""
    children: List[Child] = []
    limit = min(count, count_children(space, allowed))
    while len(children) < limit:
        child = uniform_child(space, rng, allowed)
        if child not in children:
            children.append(child)
    return children


def validation_children(space: SearchSpace, seed: int, count: int, allowed: Allowed = None) -> List[Child]:
    """A fixed, seeded set of distinct children scored at every validation."""
    return distinct_children(space, rng_for(seed, STREAM_VALID_CHILDREN), count, allowed)
