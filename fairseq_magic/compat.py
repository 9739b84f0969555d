"""Checkpoint loading under torch >= 2.6.

torch now loads with ``weights_only=True`` by default, which refuses fairseq
checkpoints: they pickle the run's config (omegaconf containers, argparse
namespaces) next to the weights.  fairseq reads checkpoints in two places:
``checkpoint_utils.load_checkpoint_to_cpu`` (resume, ``--restore-file``,
``fairseq-validate``, ``from_pretrained``) and, in distributed training, the
broadcast of the loaded state from rank 0 to the other ranks
(``distributed.utils._broadcast_object_slow``).  Both are wrapped so that they
unpickle the way fairseq was written for (a checkpoint is trusted input, as it
always was before torch 2.6), and an unreadable file becomes one clear error.
"""

import functools
import os
import pickle

import torch
from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils

from .errors import MagicError

_UNREADABLE = (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError)


def _full_unpickling(fn):
    """``fn`` with torch.load defaulting to weights_only=False while it runs."""
    if getattr(fn, "_fairseq_magic", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        plain_load = torch.load

        def load(*a, **kw):
            kw.setdefault("weights_only", False)
            return plain_load(*a, **kw)

        torch.load = load
        try:
            return fn(*args, **kwargs)
        finally:
            torch.load = plain_load

    wrapper._fairseq_magic = True
    return wrapper


def _checked(load_checkpoint_to_cpu):
    @functools.wraps(load_checkpoint_to_cpu)
    def wrapper(path, arg_overrides=None, load_on_all_ranks=False):
        if "://" not in str(path) and not os.path.exists(path):
            raise MagicError(f"checkpoint not found: {path}")
        try:
            state = load_checkpoint_to_cpu(path, arg_overrides, load_on_all_ranks)
        except _UNREADABLE as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise MagicError(f"cannot read checkpoint {path}: {first}") from err
        if not isinstance(state, dict) or "model" not in state:
            raise MagicError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
        from .models.child import complete_child_config

        complete_child_config(state)
        return state

    wrapper._fairseq_magic = True
    return wrapper


def patch_checkpoint_loading() -> None:
    if getattr(checkpoint_utils.load_checkpoint_to_cpu, "_fairseq_magic", False):
        return
    checkpoint_utils.load_checkpoint_to_cpu = _checked(_full_unpickling(checkpoint_utils.load_checkpoint_to_cpu))
    distributed_utils._broadcast_object_slow = _full_unpickling(distributed_utils._broadcast_object_slow)
