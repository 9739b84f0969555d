"""Seeded random streams and the process's rank: what lets every rank take the
same decisions without talking to the others.

Every random choice of a search (the child of an update, the first anchor,
the children scored for shrinking, GDAS's noise, ...) is drawn from its own
generator, ``rng_for(seed, STREAM_..., keys...)``: a pure function of the run's
seed, the stream and a key such as the update number. No global RNG is
touched, so every rank and every micro-batch draws the same, and a resumed
run draws exactly what the uninterrupted one would have.
"""

import numpy as np

# Streams drawn from one seed; distinct keys keep them independent. Never renumber:
# a run's choices (and a resumed run's) depend on these values.
STREAM_TRAIN = 0  # the child of each update (training/samplers.py)
STREAM_VALID_CHILDREN = 1  # the fixed validation children
STREAM_INITIAL_CHILD = 2  # MAGIC-T's first child
STREAM_ANCHOR = 3  # MAGIC-A's anchor candidates (training/anchor.py)
STREAM_AVERAGE_TARGET = 4  # MAGIC-A's --align-target average
STREAM_SHRINK = 5  # progressive shrinking's scored children
STREAM_INTERFERENCE = 6  # analysis/interference.py, and its samples during training
STREAM_RANK = 7  # analysis/rank_correlation.py's children
STREAM_GUMBEL = 8  # GDAS's noise
STREAM_ARCH_BATCHES = 9  # bilevel search's held-out batches
STREAM_ALIGN_SENTENCES = 10  # MAGIC-A's --align-batch-fraction
STREAM_FAIR_WINDOW = 11  # the fair sampler's permutation of each (layer, window)

# Sub-streams: a stream's keys split into ranges, rng_for(seed, STREAM, OFFSET + n). Never renumber either.
# STREAM_ANCHOR: keys below ANCHOR_AFTER_SHRINKING are epochs (the top-p policy's children at an epoch's start;
# a random first anchor uses the key of the moment it is chosen)
ANCHOR_AFTER_SHRINKING = 1_000_000  # + epoch: a new anchor when shrinking removed the old one
ANCHOR_FIRST_CHILDREN = 2_000_000  # + key: the children the first anchor is chosen from
# STREAM_INTERFERENCE: keys (layer, repeat) for `fairseq-magic interference`, and from here
INTERFERENCE_DURING_TRAINING = 1_000_000  # + update: the samples of --interference-interval


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for (seed, keys...): no global RNG is touched."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *map(int, keys)]))


def rank_and_world():
    """(this process's rank, number of ranks); (0, 1) outside distributed training."""
    import torch  # here, so that the plain-data modules (space, samplers) need no torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
