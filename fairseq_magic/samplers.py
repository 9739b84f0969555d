"""Samplers: which child the super-net trains at each update.

A sampler is a pure function of (seed, update number, previous child).  Every
micro-batch of an update and every rank calls it with the same arguments, so
all of them train the same child without communicating, and a resumed run
(which restores the update number) samples exactly what the uninterrupted run
would have.
"""

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .space import Child, SearchSpace, SpaceError
from .streams import STREAM_INITIAL_CHILD, STREAM_TRAIN, STREAM_VALID_CHILDREN, rng_for

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
    """Base class: ``sampler(update_num, previous) -> child``."""

    name = ""

    def __init__(self, space: SearchSpace, seed: int):
        self.space = space
        self.seed = seed

    def __call__(self, update_num: int, previous: Optional[Child] = None, allowed: Allowed = None) -> Child:
        """The child of ``update_num``; ``allowed`` restricts each layer (a shrunk space)."""
        raise NotImplementedError


class UniformSampler(Sampler):
    """SPOS (Guo et al. 2020): a fresh uniform child at every update."""

    name = "uniform"

    def __call__(self, update_num: int, previous: Optional[Child] = None, allowed: Allowed = None) -> Child:
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

    def __call__(self, update_num: int, previous: Optional[Child] = None, allowed: Allowed = None) -> Child:
        if allowed is None and self.space.groups:
            allowed = self.space.layer_options
        if previous is None:
            return uniform_child(self.space, rng_for(self.seed, STREAM_INITIAL_CHILD), allowed)
        rng = rng_for(self.seed, STREAM_TRAIN, update_num)
        previous = self.space.validate(previous)
        if allowed is not None and any(c not in options for c, options in zip(previous, allowed)):
            # the space was just shrunk under the walk: removed operators are re-drawn
            fresh = uniform_child(self.space, rng, allowed)
            previous = tuple(c if c in options else f for c, f, options in zip(previous, fresh, allowed))
        return modify(previous, self.k, self.space.num_candidates, rng, allowed)


SAMPLERS: Dict[str, Callable[..., Sampler]] = {cls.name: cls for cls in (UniformSampler, GradualSampler)}


def build_sampler(name: str, space: SearchSpace, seed: int, gradual_k: int = 1) -> Sampler:
    if name not in SAMPLERS:
        raise SpaceError(f"unknown sampler '{name}' (choose from {', '.join(sorted(SAMPLERS))})")
    if name == GradualSampler.name:
        return GradualSampler(space, seed, gradual_k=gradual_k)
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
