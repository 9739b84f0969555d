"""Checkpoints: read without running code, written without losing a good one.

What the plugin does with a checkpoint file; ``fairseq_patches.py`` says where
fairseq calls it. With the plugin loaded:

* a checkpoint is unpickled with ``torch.load(weights_only=True)`` and one
  allowed class, ``argparse.Namespace`` (how fairseq saves the config of models
  without a dataclass, RoBERTa among them). A checkpoint that needs anything
  else is refused with one line naming what it asks for; a user who trusts the
  file opts in with ``--unsafe-load-checkpoint`` (``fairseq-magic``) or
  ``FAIRSEQ_MAGIC_UNSAFE_LOAD=1`` (any command);
* a ``--restore-file`` must be a readable fairseq checkpoint file: one that
  does not exist, a folder, an empty or a foreign file is an error before
  anything is trained or written (fairseq would start from scratch and
  overwrite ``checkpoint_last.pt``);
* every checkpoint file, the copies included, is written to ``<name>.tmp`` and
  renamed into place, so a kill leaves either the old or the new file; a save
  that fails (a full disk) removes its ``.tmp`` and is one error line;
* the data directory is recorded as an absolute path;
* the config of a plugin model or task opens with ``PLUGIN_NOTE``, a key that
  says how to load the plugin: stock fairseq, asked to load the checkpoint
  without it, prints its config in the error (``Could not infer task type from
  {...}``, or ``KeyError: "'...'"`` naming the config's first key, a slip in
  fairseq's own message), so the user reads the note; the plugin's loader
  removes it again;
* a resume never goes backwards: it continues from the readable checkpoint of
  the save directory that records the most updates (``checkpoint_last.pt`` when
  it is whole and the latest, as it is after any ordinary run), judged by the
  update count inside each file, not by file times (``cp -r`` resets them),
  with one warning when that is not ``checkpoint_last.pt``; ``.tmp`` files left
  by a run killed while saving are removed when the next run starts;
* a checkpoint whose dictionary is not the data's is one line naming both
  sizes and both files (torch would print a size-mismatch traceback).

What the plugin's models keep inside a checkpoint is ``models/state_format.py``.
"""

import argparse
import contextlib
import errno
import logging
import os
import pickle
import re
import shutil
import zipfile
from typing import Callable, Optional, Tuple

import torch
from fairseq import checkpoint_utils
from omegaconf import OmegaConf, open_dict

from .errors import MagicError

logger = logging.getLogger("fairseq_magic.checkpoint")

UNSAFE_ENV = "FAIRSEQ_MAGIC_UNSAFE_LOAD"
SAFE_GLOBALS = (argparse.Namespace,)
_UNREADABLE = (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError, zipfile.BadZipFile)
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
torch_load_of_torch = torch.load  # torch's own, kept before anything can replace it
_fairseq_save = checkpoint_utils.torch_persistent_save  # fairseq's own, for remote paths and async writes


class UnsafeCheckpointError(MagicError):
    """A checkpoint whose unpickling would call something outside the allow-list."""


def allow_unsafe_loading() -> None:
    """Trust every checkpoint this process loads (``--unsafe-load-checkpoint``)."""
    os.environ[UNSAFE_ENV] = "1"


def unsafe_loading_allowed() -> bool:
    return os.environ.get(UNSAFE_ENV, "").strip() not in ("", "0")


def is_local(path: str) -> bool:
    """A path on this machine (not a URL fairseq's PathManager handles)."""
    return "://" not in str(path)


def unpickle_fully(*args, **kwargs):
    """torch's own ``torch.load``, unpickling everything (what fairseq's broadcast needs)."""
    return torch_load_of_torch(*args, **dict(kwargs, weights_only=False))


def torch_load(f, map_location="cpu", mmap: bool = False):
    """``torch.load`` that runs no code from the file: weights_only with the
    allow-list, or the full unpickler when the user opted in. ``mmap`` maps the
    tensors instead of reading them (a look at the rest of a large file)."""
    if unsafe_loading_allowed():
        return torch_load_of_torch(f, map_location=map_location, weights_only=False, mmap=mmap)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch_load_of_torch(f, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = _GLOBAL.search(str(err))
        if found is None:
            raise
        name = f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "the checkpoint")
        raise UnsafeCheckpointError(
            f"refusing to load {name}: unpickling it would call '{found.group(1)}', which can run code; "
            f"if you trust the file, load it with --unsafe-load-checkpoint (fairseq-magic) or {UNSAFE_ENV}=1"
        ) from None


def _reason(err: BaseException) -> str:
    """One line saying why a file did not load (torch's own message opens with a paragraph of advice)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
    if lines[0].startswith("Weights only load failed"):
        return next((line for line in lines if line.startswith("Unsupported")), "not a checkpoint torch can read safely")
    return lines[0]


_NOT_FAIRSEQ = (TypeError, KeyError, AttributeError, IndexError)  # what fairseq's upgrade of a foreign dict raises


def _check_file(path: str) -> None:
    """A checkpoint path names a non-empty file (one line otherwise)."""
    if not is_local(path):
        return
    if not os.path.exists(path):
        raise MagicError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise MagicError(f"{path} is a folder, not a checkpoint file")
    if os.path.getsize(path) == 0:
        raise MagicError(f"cannot read checkpoint {path}: the file is empty")


def read_checkpoint(path: str, load: Callable[[], dict]) -> dict:
    """What ``load()`` (fairseq's ``load_checkpoint_to_cpu`` of ``path``, unpickling safely)
    returns, with a missing, unreadable, refused or foreign file turned into one error line."""
    _check_file(path)
    try:
        state = load()
    except _UNREADABLE as err:
        raise MagicError(f"cannot read checkpoint {path}: {_reason(err)}") from None
    except _NOT_FAIRSEQ as err:
        raise MagicError(f"{path} is not a fairseq checkpoint ({type(err).__name__}: {_reason(err)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise MagicError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    from .models.state_format import complete_child_config  # (models import this module)

    remove_plugin_note(state)
    complete_child_config(state)
    return state


def readable(path: str) -> bool:
    """Whether ``path`` is a whole checkpoint file (a zip archive whose every
    member checks out, or a legacy file that loads)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.testzip() is None
        torch_load(path)
        return True
    except (_UNREADABLE + (MagicError,)):
        return False


def recorded_update(path: str) -> Optional[int]:
    """The update count a fairseq checkpoint records (its optimizer history),
    read without its tensors; None when the file is not such a checkpoint. A file
    that would run code is refused (UnsafeCheckpointError), never stepped over."""
    try:
        state = torch_load(path, mmap=zipfile.is_zipfile(path))
        return int(state["optimizer_history"][-1]["num_updates"]) if "model" in state else None
    except (_UNREADABLE + _NOT_FAIRSEQ):
        return None


def latest_readable(save_dir: str) -> Optional[Tuple[str, int]]:
    """(path, update) of the whole ``checkpoint*.pt`` in ``save_dir`` that records
    the most updates; ``checkpoint_last.pt`` wins a tie. None if there is none."""
    last = os.path.join(save_dir, "checkpoint_last.pt")
    recorded = []
    for name in os.listdir(save_dir):
        path = os.path.join(save_dir, name)
        if name.startswith("checkpoint") and name.endswith(".pt") and os.path.isfile(path):
            update = recorded_update(path)
            if update is not None:
                recorded.append((update, path == last, path))
    for update, _, path in sorted(recorded, reverse=True):
        if readable(path):
            return path, update
    return None


def remove_stale_temporaries(save_dir: str) -> None:
    """Remove the ``*.pt.tmp`` files a run killed while saving left behind."""
    for name in os.listdir(save_dir):
        if name.endswith(".pt.tmp"):
            _remove(os.path.join(save_dir, name))
            logger.warning(f"removed {os.path.join(save_dir, name)}, left by a run stopped while saving")


def check_restore_file(path: str) -> None:
    """``--restore-file`` names a fairseq checkpoint file (one line otherwise, before anything is written)."""
    if is_local(path) and not os.path.exists(path):
        raise MagicError(f"--restore-file not found: {path} (nothing was trained or written)")
    try:
        _check_file(path)
    except MagicError as err:
        raise MagicError(f"--restore-file: {err} (nothing was trained or written)") from None
    if is_local(path) and recorded_update(path) is None:
        try:
            torch_load(path, mmap=zipfile.is_zipfile(path))
        except _UNREADABLE as err:
            raise MagicError(f"cannot read checkpoint {path}: {_reason(err)} (nothing was trained or written)") from None
        raise MagicError(f"--restore-file {path} is not a fairseq checkpoint (nothing was trained or written)")


def _resume_point(save_dir: str, last: str) -> Optional[str]:
    """Where a run that restores ``checkpoint_last.pt`` should continue from: None to
    let fairseq go on as usual (a fresh start, or ``last`` itself)."""
    if not os.path.isdir(save_dir):
        return None
    remove_stale_temporaries(save_dir)
    found = latest_readable(save_dir)
    if found is None:
        if os.path.exists(last):
            raise MagicError(f"cannot read {last} and no other checkpoint in {save_dir} is readable")
        return None
    path, update = found
    if path == last:
        return None
    if not os.path.exists(last):
        why = "is missing"
    else:
        behind = recorded_update(last)
        why = "is unreadable (cut short?)" if behind is None or not readable(last) else f"records update {behind}"
    logger.warning(f"{last} {why}; resuming from {path} (update {update}), "
                   "the readable checkpoint with the most updates")
    return path


def restore(cfg, trainer, load: Callable[[], object]):
    """fairseq's ``load_checkpoint`` (``load()``, the start of every training run) that
    refuses a ``--restore-file`` that is not a checkpoint and never resumes behind a
    readable later checkpoint. ``cfg`` is the run's checkpoint config."""
    suffix = trainer.checkpoint_suffix
    criterion = trainer.cfg.criterion._name
    if cfg.restore_file != "checkpoint_last.pt":
        path = cfg.restore_file.replace(".pt", suffix + ".pt") if suffix else cfg.restore_file
        check_restore_file(path)
        return _naming_mismatch(load, path, criterion)
    last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
    resume = None if suffix or not is_local(last) else _resume_point(cfg.save_dir, last)
    if resume is None:
        return _naming_mismatch(load, last, criterion)
    with open_dict(cfg):
        cfg.restore_file = resume
    try:
        return _naming_mismatch(load, resume, criterion)
    finally:
        with open_dict(cfg):
            cfg.restore_file = "checkpoint_last.pt"


def _naming_mismatch(load, path: str, criterion: str):
    """fairseq's Trainer turns every error of loading the weights into "Cannot load model
    parameters ..."; a dictionary mismatch found by the model's check, or an entry the run
    needs and the checkpoint lacks, comes out as one line."""
    try:
        return load()
    except Exception as err:
        cause = err.__context__
        if isinstance(cause, DictionaryMismatch):
            raise cause.of(path) from None
        if isinstance(cause, KeyError) and cause.args == ("criterion",):
            raise MagicError(f"{path} holds no criterion weights, which --criterion {criterion} restores (an "
                             "ELECTRA generator and token head): resume from a checkpoint of the same criterion, "
                             "or start without --restore-file") from None
        raise


class DictionaryMismatch(MagicError):
    """A checkpoint trained over another dictionary than the data's."""

    def __init__(self, rows: int, symbols: int, dictionary_file: Optional[str], checkpoint: str = "the checkpoint"):
        self.rows, self.symbols, self.dictionary_file = rows, symbols, dictionary_file or "dict.txt"
        super().__init__(f"{checkpoint} has a dictionary of {rows} symbols, the data's {self.dictionary_file} has "
                         f"{symbols}: use the data the model was trained on, or binarise yours with its dict.txt "
                         "(fairseq-preprocess --srcdict)")

    def of(self, checkpoint: str) -> "DictionaryMismatch":
        """The same mismatch, naming the checkpoint."""
        return DictionaryMismatch(self.rows, self.symbols, self.dictionary_file, checkpoint)


EMBED_TOKENS_KEYS = ("encoder.sentence_encoder.embed_tokens.weight",  # the token embedding, plain or factorised
                     "encoder.sentence_encoder.embed_tokens.table.weight")


def check_dictionary(state_dict, prefix: str, symbols: int, dictionary_file: Optional[str]) -> None:
    """Before a model over ``symbols`` tokens loads ``state_dict``: its token embedding
    has as many rows (one line naming both sizes, instead of torch's size-mismatch traceback)."""
    rows = next((state_dict[prefix + key].shape[0] for key in EMBED_TOKENS_KEYS if prefix + key in state_dict), None)
    if rows is not None and rows != symbols:
        raise DictionaryMismatch(rows, symbols, dictionary_file)


def naming_the_checkpoint(filenames, load: Callable[[], object]):
    """``load()`` (fairseq's model loader of ``filenames``: search, interference, rank,
    fairseq-validate, the hub), whose dictionary mismatch names the checkpoint too."""
    try:
        return load()
    except DictionaryMismatch as err:
        raise err.of(", ".join(map(str, filenames))) from None


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _save_failed(filename: str, err: BaseException) -> MagicError:
    """One line for a failed save; torch's archive writer reports a full disk as "unexpected pos"."""
    if isinstance(err, OSError) and err.errno in _NO_ROOM:
        reason = f"the disk is full or a file-size limit was hit ({err.strerror})"
    elif isinstance(err, RuntimeError) and any(s in str(err) for s in ("unexpected pos", "PytorchStreamWriter")):
        reason = f"the disk is full or a file-size limit was hit (torch: {_reason(err).split('] ')[-1].strip(' .')})"
    else:
        reason = getattr(err, "strerror", None) or _reason(err)
    return MagicError(f"cannot save checkpoint {filename}: {reason}")


def _absolute_data_path(state) -> None:
    """Record the data directory absolute (it is relative to where training ran), so that
    search, rank and interference find it from anywhere."""
    cfg = state.get("cfg")
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if isinstance(task, dict) and isinstance(task.get("data"), str) and task["data"]:
        task["data"] = os.pathsep.join(p if not is_local(p) else os.path.abspath(p) for p in task["data"].split(os.pathsep))


PLUGIN_NOTE = ("fairseq-magic plugin not loaded - add --user-dir fairseq_magic (fairseq-train, fairseq-validate) "
               "or user_dir=PATH (from_pretrained) or import fairseq_magic")  # no '.', ':' or braces: see above


def add_plugin_note(state) -> None:
    """Open the model and task config of a plugin checkpoint with ``PLUGIN_NOTE``."""
    cfg = state.get("cfg")
    for section in ("model", "task"):
        entry = cfg.get(section) if isinstance(cfg, dict) else None
        if isinstance(entry, dict) and str(entry.get("_name", "")).startswith("magic_") and PLUGIN_NOTE not in entry:
            cfg[section] = {PLUGIN_NOTE: True, **entry}


def remove_plugin_note(state) -> None:
    """Take ``PLUGIN_NOTE`` out of a loaded checkpoint's config (the plugin is loaded)."""
    cfg = state.get("cfg")
    for section in ("model", "task"):
        entry = cfg.get(section) if cfg is not None else None
        if entry is not None and getattr(entry, "pop", None) is not None and PLUGIN_NOTE in entry:
            with open_dict(entry) if OmegaConf.is_config(entry) else contextlib.nullcontext():
                entry.pop(PLUGIN_NOTE)


def atomic_save(obj, filename: str, async_write: bool = False) -> None:
    """Write a checkpoint to ``filename.tmp`` and rename it into place; a failed
    write removes the temporary file and is one error line."""
    if isinstance(obj, dict):
        _absolute_data_path(obj)
        add_plugin_note(obj)
    if async_write or not is_local(filename):
        return _fairseq_save(obj, filename, async_write)
    tmp = filename + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except (OSError, RuntimeError) as err:
        _remove(tmp)
        raise _save_failed(filename, err) from None


def atomic_copy(src_path: str, dst_path: str) -> None:
    """Copy a checkpoint (checkpoint_last.pt, checkpoint_best.pt from the one just written)
    through a temporary file and a rename; a failed copy is one error line."""
    tmp = dst_path + ".tmp"
    try:
        shutil.copyfile(src_path, tmp)
        os.replace(tmp, dst_path)
    except OSError as err:
        _remove(tmp)
        raise _save_failed(dst_path, err) from None


def load_supernet_checkpoint(path: str, arg_overrides: Optional[dict] = None):
    """(state, model config, space) of a super-net checkpoint, with ``arg_overrides``
    (``{"data": ...}``) applied to its config; a clear error otherwise."""
    state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides)
    model_cfg, space = supernet_of_state(state, path)
    return state, model_cfg, space


def model_name(state: dict) -> str:
    """The model (``--arch``'s registered model) a checkpoint holds ('' if none is recorded)."""
    cfg = state.get("cfg")
    model_cfg = cfg.get("model") if cfg is not None else None
    if isinstance(model_cfg, argparse.Namespace):  # a model without a dataclass (plain RoBERTa): fairseq keeps its args
        return str(getattr(model_cfg, "arch", "") or getattr(model_cfg, "_name", ""))
    return str(model_cfg.get("_name", "")) if model_cfg is not None else ""


def supernet_of_state(state: dict, path: str):
    """(model config, space) of a loaded super-net checkpoint, its weights brought to today's
    format; one line if it holds another model."""
    cfg = state.get("cfg")
    model_cfg = cfg.get("model") if cfg is not None else None
    name = model_name(state)
    if not name.startswith("magic_supernet") or "supernet_layers" not in model_cfg:
        raise MagicError(f"{path} is not a fairseq-magic super-net checkpoint (its model is '{name or 'unknown'}')")
    from .models.state_format import supernet_space, upgrade_state

    upgrade_state(state["model"], source=path)
    return model_cfg, supernet_space(model_cfg)
