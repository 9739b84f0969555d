"""Every change the plugin makes to fairseq's and torch's behaviour, in one place.

``install()`` applies them all, once; ``import fairseq_magic`` (and so
``--user-dir fairseq_magic``) calls it. Stock fairseq does everything else.

=====================================================  ==================================================
fairseq / torch                                        with the plugin loaded
=====================================================  ==================================================
``checkpoint_utils.load_checkpoint_to_cpu``            unpickles with ``weights_only=True`` (``torch.load``
(resume, ``--restore-file``, ``fairseq-validate``,     is swapped for the safe one while it runs); a
the hub, every ``fairseq-magic`` command)              missing, unreadable, refused or foreign file is one
                                                       line (``checkpoint.read_checkpoint``)
``checkpoint_utils.load_checkpoint`` (the start of     a ``--restore-file`` that is not a checkpoint is one
every training run)                                    line; a resume never goes backwards
                                                       (``checkpoint.restore``)
``checkpoint_utils.load_model_ensemble_and_task``      a dictionary mismatch names the checkpoint
``checkpoint_utils.torch_persistent_save``             writes ``<name>.tmp`` and renames it
                                                       (``checkpoint.atomic_save``)
``checkpoint_utils.PathManager.copy``                  the same for checkpoint_last.pt / _best.pt
``distributed.utils._broadcast_object_slow``           unpickles fully what rank 0 sent (rank 0 read the
                                                       checkpoint safely; fairseq's config objects ride along)
``distributed.utils.call_main`` (``fairseq-train``,    the options' declared ranges are checked first
``fairseq-validate``)                                  (``ranges.check_config``)
``trainer.Trainer.__init__``                           ``--fp16`` / ``--bf16`` without a GPU is one line
                                                       (``precision.check_precision``)
=====================================================  ==================================================

Each replaced function carries ``_fairseq_magic = True``; the original stays
reachable as its ``__wrapped__`` (``functools.wraps``).
"""

import contextlib
import functools

import torch
from fairseq import checkpoint_utils, trainer
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager

from . import checkpoint
from .precision import check_precision
from .ranges import check_config


def install() -> None:
    """Apply every patch (a second call does nothing)."""
    if getattr(checkpoint_utils.load_checkpoint_to_cpu, "_fairseq_magic", False):
        return
    checkpoint_utils.load_checkpoint_to_cpu = _patched(checkpoint_utils.load_checkpoint_to_cpu, _safe_load)
    checkpoint_utils.load_checkpoint = _patched(checkpoint_utils.load_checkpoint, _checked_restore)
    checkpoint_utils.load_model_ensemble_and_task = _patched(checkpoint_utils.load_model_ensemble_and_task,
                                                             _naming_the_checkpoint)
    checkpoint_utils.torch_persistent_save = checkpoint.atomic_save
    checkpoint_utils.PathManager = _AtomicCopyPathManager
    distributed_utils._broadcast_object_slow = _patched(distributed_utils._broadcast_object_slow, _full_unpickling)
    distributed_utils.call_main = _patched(distributed_utils.call_main, _options_checked)
    trainer.Trainer.__init__ = _patched(trainer.Trainer.__init__, _precision_checked)


def _patched(original, replacement):
    """``replacement(original, *args, **kwargs)`` in place of ``original``."""

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        return replacement(original, *args, **kwargs)

    wrapper._fairseq_magic = True
    return wrapper


@contextlib.contextmanager
def _torch_load_is(load):
    """While fairseq code runs, the ``torch.load`` it calls is ``load``."""
    torch.load = load
    try:
        yield
    finally:
        torch.load = checkpoint.torch_load_of_torch


def _safe_torch_load(f, map_location=None, **_ignored):
    return checkpoint.torch_load(f, map_location=map_location)


def _safe_load(original, path, arg_overrides=None, load_on_all_ranks=False):
    def load():
        with _torch_load_is(_safe_torch_load):
            return original(path, arg_overrides, load_on_all_ranks)

    return checkpoint.read_checkpoint(path, load)


def _checked_restore(original, cfg, trainer, **passthrough_args):
    return checkpoint.restore(cfg, trainer, lambda: original(cfg, trainer, **passthrough_args))


def _naming_the_checkpoint(original, filenames, *args, **kwargs):
    return checkpoint.naming_the_checkpoint(filenames, lambda: original(filenames, *args, **kwargs))


def _full_unpickling(original, *args, **kwargs):
    with _torch_load_is(checkpoint.unpickle_fully):
        return original(*args, **kwargs)


def _options_checked(original, cfg, main, **kwargs):
    check_config(cfg)
    return original(cfg, main, **kwargs)


def _precision_checked(original, self, cfg, *args, **kwargs):
    check_precision(cfg)
    return original(self, cfg, *args, **kwargs)


class _AtomicCopyPathManager(PathManager):
    """fairseq's PathManager, whose ``copy`` of a local checkpoint goes through a temporary file."""

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if not (checkpoint.is_local(src_path) and checkpoint.is_local(dst_path)):
            return PathManager.copy(src_path, dst_path, overwrite)
        checkpoint.atomic_copy(src_path, dst_path)
        return True
