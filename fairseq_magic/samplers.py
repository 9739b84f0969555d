"""Samplers: which child the super-net trains at each update.

A sampler is a pure function of (seed, update number, previous child).  Every
micro-batch of an update and every rank calls it with the same arguments, so
all of them train the same child without communicating, and a resumed run
(which restores the update number) samples exactly what the uninterrupted run
would have.
"""

from typing import Callable, Dict, List, Optional

import numpy as np

from .space import Child, SearchSpace, SpaceError


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for (seed, keys...): no global RNG is touched."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *map(int, keys)]))


# Streams drawn from one seed; distinct keys keep them independent.
STREAM_TRAIN = 0
STREAM_VALID_CHILDREN = 1


def uniform_child(space: SearchSpace, rng: np.random.Generator) -> Child:
    """Every layer's operator i.i.d. uniform over the candidates (SPOS)."""
    return tuple(int(c) for c in rng.integers(0, space.num_candidates, size=space.num_layers))


class Sampler:
    """Base class: ``sampler(update_num, previous) -> child``."""

    name = ""

    def __init__(self, space: SearchSpace, seed: int):
        self.space = space
        self.seed = seed

    def __call__(self, update_num: int, previous: Optional[Child] = None) -> Child:
        raise NotImplementedError


class UniformSampler(Sampler):
    """SPOS (Guo et al. 2020): a fresh uniform child at every update."""

    name = "uniform"

    def __call__(self, update_num: int, previous: Optional[Child] = None) -> Child:
        return uniform_child(self.space, rng_for(self.seed, STREAM_TRAIN, update_num))


SAMPLERS: Dict[str, Callable[..., Sampler]] = {UniformSampler.name: UniformSampler}


def build_sampler(name: str, space: SearchSpace, seed: int, **options) -> Sampler:
    if name not in SAMPLERS:
        raise SpaceError(f"unknown sampler '{name}' (choose from {', '.join(sorted(SAMPLERS))})")
    return SAMPLERS[name](space, seed, **options)


def validation_children(space: SearchSpace, seed: int, count: int) -> List[Child]:
    """A fixed, seeded set of distinct children scored at every validation."""
    rng = rng_for(seed, STREAM_VALID_CHILDREN)
    children: List[Child] = []
    limit = min(count, space.num_children)
    while len(children) < limit:
        child = uniform_child(space, rng)
        if child not in children:
            children.append(child)
    return children
