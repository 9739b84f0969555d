"""Checkpoint loading under torch >= 2.6.

torch now loads with ``weights_only=True`` by default, which refuses fairseq
checkpoints: they pickle the run's config (omegaconf containers, argparse
namespaces) next to the weights.  fairseq's loaders (resume, ``--restore-file``,
``fairseq-validate``, ``from_pretrained``) all go through
``checkpoint_utils.load_checkpoint_to_cpu``; we wrap that one function so it
loads the way fairseq was written for (a checkpoint is trusted input, as it
always was before torch 2.6) and turns an unreadable file into one clear error.
"""

import functools
import os
import pickle

import torch
from fairseq import checkpoint_utils

from .errors import MagicError


def _full_unpickling(load):
    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return load(*args, **kwargs)

    return wrapper


def patch_checkpoint_loading() -> None:
    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "_fairseq_magic", False):
        return

    @functools.wraps(original)
    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        if not os.path.exists(path) and "://" not in str(path):
            raise MagicError(f"checkpoint not found: {path}")
        plain_load = torch.load
        torch.load = _full_unpickling(plain_load)
        try:
            state = original(path, arg_overrides, load_on_all_ranks)
        except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise MagicError(f"cannot read checkpoint {path}: {first}") from err
        finally:
            torch.load = plain_load
        if not isinstance(state, dict) or "model" not in state:
            raise MagicError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
        return state

    load_checkpoint_to_cpu._fairseq_magic = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
