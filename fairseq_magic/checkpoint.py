"""Checkpoints: read without running code, written without losing a good one.

fairseq reads checkpoints in ``checkpoint_utils.load_checkpoint_to_cpu``
(resume, ``--restore-file``, ``fairseq-validate``, ``from_pretrained`` and
every ``fairseq-magic`` command) and writes them in ``torch_persistent_save``
plus a copy to ``checkpoint_last.pt`` / ``checkpoint_best.pt``. When the plugin
is loaded (``--user-dir fairseq_magic`` or ``import fairseq_magic``):

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

It also holds what the plugin's checkpoints carry besides fairseq's: the JSON
codec of values kept in a state dict (the search state, a child's spec), the
mapping between a search space and a model config's size fields, and the
completion of a ``magic_child`` config from the spec its weights carry.

The distributed broadcast of a loaded checkpoint from rank 0 to the other ranks
(``distributed.utils._broadcast_object_slow``) unpickles what rank 0 sent
(the checkpoint as rank 0 read it, safely, plus fairseq's config objects), so
it keeps fairseq's full unpickling.
"""

import argparse
import contextlib
import errno
import functools
import json
import logging
import os
import pickle
import re
import shutil
import zipfile
from typing import Optional, Tuple

import torch
from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager
from fairseq.utils import safe_getattr
from omegaconf import OmegaConf, open_dict

from .errors import MagicError
from .space import SearchSpace

logger = logging.getLogger("fairseq_magic.checkpoint")

UNSAFE_ENV = "FAIRSEQ_MAGIC_UNSAFE_LOAD"
SAFE_GLOBALS = (argparse.Namespace,)
_UNREADABLE = (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError, zipfile.BadZipFile)
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_plain_torch_load = torch.load
_fairseq_save = checkpoint_utils.torch_persistent_save


class UnsafeCheckpointError(MagicError):
    """A checkpoint whose unpickling would call something outside the allow-list."""


def allow_unsafe_loading() -> None:
    """Trust every checkpoint this process loads (``--unsafe-load-checkpoint``)."""
    os.environ[UNSAFE_ENV] = "1"


def unsafe_loading_allowed() -> bool:
    return os.environ.get(UNSAFE_ENV, "").strip() not in ("", "0")


def _is_local(path: str) -> bool:
    return "://" not in str(path)


def torch_load(f, map_location="cpu", mmap: bool = False):
    """``torch.load`` that runs no code from the file: weights_only with the
    allow-list, or the full unpickler when the user opted in. ``mmap`` maps the
    tensors instead of reading them (a look at the rest of a large file)."""
    if unsafe_loading_allowed():
        return _plain_torch_load(f, map_location=map_location, weights_only=False, mmap=mmap)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return _plain_torch_load(f, map_location=map_location, weights_only=True, mmap=mmap)
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


@contextlib.contextmanager
def _torch_load_replaced(load):
    """While fairseq code runs, the ``torch.load`` it calls is ``load``."""
    torch.load = load
    try:
        yield
    finally:
        torch.load = _plain_torch_load


def _safe_from_fairseq(f, map_location=None, **_ignored):
    return torch_load(f, map_location=map_location)


def _unpickle_fully(*args, **kwargs):
    return _plain_torch_load(*args, **dict(kwargs, weights_only=False))


_NOT_FAIRSEQ = (TypeError, KeyError, AttributeError, IndexError)  # what fairseq's upgrade of a foreign dict raises


def _check_file(path: str) -> None:
    """A checkpoint path names a non-empty file (one line otherwise)."""
    if not _is_local(path):
        return
    if not os.path.exists(path):
        raise MagicError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise MagicError(f"{path} is a folder, not a checkpoint file")
    if os.path.getsize(path) == 0:
        raise MagicError(f"cannot read checkpoint {path}: the file is empty")


def _checked_loader(load_checkpoint_to_cpu):
    """``load_checkpoint_to_cpu`` that unpickles safely and turns a missing,
    unreadable, refused or foreign file into one error line."""

    @functools.wraps(load_checkpoint_to_cpu)
    def wrapper(path, arg_overrides=None, load_on_all_ranks=False):
        _check_file(path)
        try:
            with _torch_load_replaced(_safe_from_fairseq):
                state = load_checkpoint_to_cpu(path, arg_overrides, load_on_all_ranks)
        except _UNREADABLE as err:
            raise MagicError(f"cannot read checkpoint {path}: {_reason(err)}") from None
        except _NOT_FAIRSEQ as err:
            raise MagicError(f"{path} is not a fairseq checkpoint ({type(err).__name__}: {_reason(err)})") from None
        if not isinstance(state, dict) or "model" not in state:
            raise MagicError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
        remove_plugin_note(state)
        complete_child_config(state)
        return state

    wrapper._fairseq_magic = True
    return wrapper


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
    if _is_local(path) and not os.path.exists(path):
        raise MagicError(f"--restore-file not found: {path} (nothing was trained or written)")
    try:
        _check_file(path)
    except MagicError as err:
        raise MagicError(f"--restore-file: {err} (nothing was trained or written)") from None
    if _is_local(path) and recorded_update(path) is None:
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
    if not any(n.startswith("checkpoint") and n.endswith(".pt") for n in os.listdir(save_dir)):
        return None
    found = latest_readable(save_dir)
    if found is None:
        if os.path.exists(last):
            raise MagicError(f"cannot read {last} and no other checkpoint in {save_dir} is readable")
        return None
    path, update = found
    if path == last:
        return None
    behind = recorded_update(last) if os.path.exists(last) else None
    why = "is missing" if not os.path.exists(last) else "is unreadable (cut short?)" \
        if behind is None or not readable(last) else f"records update {behind}"
    logger.warning(f"{last} {why}; resuming from {path} (update {update}), "
                   "the readable checkpoint with the most updates")
    return path


def _checked_restore(load_checkpoint):
    """fairseq's ``load_checkpoint`` (the start of every training run) that
    refuses a ``--restore-file`` that is not a checkpoint and never resumes
    behind a readable later checkpoint."""

    @functools.wraps(load_checkpoint)
    def wrapper(cfg, trainer, **passthrough_args):
        suffix = trainer.checkpoint_suffix
        if cfg.restore_file != "checkpoint_last.pt":
            path = cfg.restore_file.replace(".pt", suffix + ".pt") if suffix else cfg.restore_file
            check_restore_file(path)
            return _naming_mismatch(load_checkpoint, path, cfg, trainer, **passthrough_args)
        last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
        resume = None if suffix or not _is_local(last) else _resume_point(cfg.save_dir, last)
        if resume is None:
            return _naming_mismatch(load_checkpoint, last, cfg, trainer, **passthrough_args)
        with open_dict(cfg):
            cfg.restore_file = resume
        try:
            return _naming_mismatch(load_checkpoint, resume, cfg, trainer, **passthrough_args)
        finally:
            with open_dict(cfg):
                cfg.restore_file = "checkpoint_last.pt"

    wrapper._fairseq_magic = True
    return wrapper


def _naming_mismatch(load_checkpoint, path, cfg, trainer, **passthrough_args):
    """fairseq's Trainer turns every error of loading the weights into "Cannot load model
    parameters ..."; a dictionary mismatch found by the model's check, or an entry the run
    needs and the checkpoint lacks, comes out as one line."""
    try:
        return load_checkpoint(cfg, trainer, **passthrough_args)
    except Exception as err:
        cause = err.__context__
        if isinstance(cause, DictionaryMismatch):
            raise cause.of(path) from None
        if isinstance(cause, KeyError) and cause.args == ("criterion",):
            raise MagicError(f"{path} holds no criterion weights, which --criterion {trainer.cfg.criterion._name} "
                             "restores (an ELECTRA generator and token head): resume from a checkpoint of the same "
                             "criterion, or start without --restore-file") from None
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


def _naming_the_checkpoint(load_model_ensemble_and_task):
    """fairseq's model loader (search, interference, rank, fairseq-validate, the hub), whose
    dictionary mismatch names the checkpoint too."""

    @functools.wraps(load_model_ensemble_and_task)
    def wrapper(filenames, *args, **kwargs):
        try:
            return load_model_ensemble_and_task(filenames, *args, **kwargs)
        except DictionaryMismatch as err:
            raise err.of(", ".join(map(str, filenames))) from None

    wrapper._fairseq_magic = True
    return wrapper


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
        task["data"] = os.pathsep.join(p if not _is_local(p) else os.path.abspath(p) for p in task["data"].split(os.pathsep))


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
    if async_write or not _is_local(filename):
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


class _AtomicCopyPathManager(PathManager):
    """fairseq's PathManager, whose ``copy`` (checkpoint_last.pt, checkpoint_best.pt
    from the checkpoint just written) goes through a temporary file and a rename."""

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if not (_is_local(src_path) and _is_local(dst_path)):
            return PathManager.copy(src_path, dst_path, overwrite)
        tmp = dst_path + ".tmp"
        try:
            shutil.copyfile(src_path, tmp)
            os.replace(tmp, dst_path)
        except OSError as err:
            _remove(tmp)
            raise _save_failed(dst_path, err) from None
        return True


def _full_unpickling(fn):
    """``fn`` with torch.load unpickling fully while it runs (the broadcast)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _torch_load_replaced(_unpickle_fully):
            return fn(*args, **kwargs)

    wrapper._fairseq_magic = True
    return wrapper


def patch_fairseq() -> None:
    """Install the safe loader, the restore checks and the atomic writes (once)."""
    if getattr(checkpoint_utils.load_checkpoint_to_cpu, "_fairseq_magic", False):
        return
    checkpoint_utils.load_checkpoint_to_cpu = _checked_loader(checkpoint_utils.load_checkpoint_to_cpu)
    checkpoint_utils.load_checkpoint = _checked_restore(checkpoint_utils.load_checkpoint)
    checkpoint_utils.load_model_ensemble_and_task = _naming_the_checkpoint(checkpoint_utils.load_model_ensemble_and_task)
    checkpoint_utils.torch_persistent_save = atomic_save
    checkpoint_utils.PathManager = _AtomicCopyPathManager
    distributed_utils._broadcast_object_slow = _full_unpickling(distributed_utils._broadcast_object_slow)


def load_supernet_checkpoint(path: str, arg_overrides: Optional[dict] = None):
    """(state, model config, space) of a super-net checkpoint, with ``arg_overrides``
    (``{"data": ...}``) applied to its config; a clear error otherwise."""
    state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides)
    cfg = state.get("cfg")
    model_cfg = cfg.get("model") if cfg is not None else None
    if isinstance(model_cfg, argparse.Namespace):  # a model without a dataclass (plain RoBERTa): fairseq keeps its args
        name = str(getattr(model_cfg, "arch", "") or getattr(model_cfg, "_name", ""))
    else:
        name = str(model_cfg.get("_name", "")) if model_cfg is not None else ""
    if not name.startswith("magic_supernet") or "supernet_layers" not in model_cfg:
        raise MagicError(f"{path} is not a fairseq-magic super-net checkpoint (its model is '{name or 'unknown'}')")
    return state, model_cfg, supernet_space(model_cfg)


# ---------------------------------------------------------------- what the plugin's checkpoints carry
SEARCH_STATE_KEY = "search_state"  # a super-net's SearchState (search_state.py), in its state dict
ARCH_WEIGHTS_PREFIX = "arch_weights."  # theta and its optimiser (relaxation.py), in its state dict
CHILD_SPEC_KEY = "child_spec"  # a magic_child's architecture and sizes, in its state dict
# the model config's size fields and the SearchSpace attributes they hold
SIZE_FIELDS = {"encoder_embed_dim": "hidden_dim", "encoder_ffn_embed_dim": "ffn_dim",
               "attention_qkv_dim": "qkv_dim", "embed_factor_dim": "embed_dim", "attention_head_dim": "head_dim"}


def encode_json(value) -> torch.Tensor:
    """A JSON-able value as a uint8 tensor, to ride along in a state dict."""
    return torch.tensor(list(json.dumps(value, sort_keys=True).encode()), dtype=torch.uint8)


def decode_json(tensor: torch.Tensor):
    return json.loads(bytes(tensor.tolist()).decode())


def arch_weights_state(state_dict, prefix: str = "") -> dict:
    """The architecture weights a super-net's state dict carries (empty if none)."""
    start = prefix + ARCH_WEIGHTS_PREFIX
    return {key[len(start):]: value for key, value in state_dict.items() if key.startswith(start)}


def size_config(space: SearchSpace) -> dict:
    """The model-config size fields of ``space`` (what ``space_sizes`` reads back)."""
    return {key: getattr(space, attr) for key, attr in SIZE_FIELDS.items()}


def space_sizes(cfg) -> dict:
    """``SearchSpace.build``'s size arguments from a model config (fields it lacks are 0)."""
    return {attr: int(safe_getattr(cfg, key, 0) or 0) for key, attr in SIZE_FIELDS.items()}


def supernet_space(cfg) -> SearchSpace:
    """The search space a super-net's model config describes."""
    sizes = space_sizes(cfg)
    sizes.pop("head_dim")  # a super-net derives it (weight-entangled spaces), a child records it
    return SearchSpace.build(num_layers=int(cfg.supernet_layers), candidate_ops=str(cfg.candidate_ops),
                             entangled=bool(safe_getattr(cfg, "weight_entanglement", False)), **sizes)


def child_spec(space: SearchSpace, child) -> dict:
    """What makes a magic_child checkpoint self-contained: its architecture and sizes."""
    return {"child_arch": space.format(child), **size_config(space)}


def complete_child_config(state: dict) -> None:
    """Give a magic_child checkpoint's config the architecture and sizes the model
    saved with its weights. fairseq saves the config as given on the command line,
    where ``--child-arch`` may be a file that is not there when the checkpoint is
    loaded elsewhere; the model's own copy makes the checkpoint self-contained."""
    cfg, weights = state.get("cfg"), state.get("model") or {}
    if cfg is None or CHILD_SPEC_KEY not in weights or getattr(cfg["model"], "get", None) is None \
            or cfg["model"].get("_name") != "magic_child":
        return
    for key, value in decode_json(weights[CHILD_SPEC_KEY]).items():
        cfg["model"][key] = value
