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
``fairseq-validate``)                                  (``ranges.check_config``); ``--bf16`` no longer
                                                       turns on ``tpu`` (``precision.bf16_without_tpu``)
``trainer.Trainer.__init__``                           ``--fp16`` / ``--bf16`` without a GPU is one line
                                                       (``precision.check_precision``; the super-net's
                                                       task checks it before anything is built)
``logging``'s root level                               INFO again where importing fairseq left it at DEBUG
                                                       (``models/wav2vec/wav2vec2_classification.py`` calls
                                                       ``logging.basicConfig(level=DEBUG)``; LOGLEVEL=DEBUG
                                                       keeps it)
``warnings``                                           the deprecation warnings fairseq 0.12's own calls
                                                       raise under hydra 1.3 and torch 2 (``QUIET``) are
                                                       not printed: nothing a user can act on
``fairseq-validate --path CKPT``'s command line (read  ``--task``, ``--criterion``, the batch size and
as the plugin is imported)                             the data folder default to the checkpoint's, so a
                                                       fine-tuned child validates with no more options
                                                       (``validate_defaults``)
``hydra.core.utils.JobReturn.return_value``            a ``fairseq-hydra-train`` job that failed with a
                                                       MagicError prints its one line and exits 1,
                                                       without hydra's block around it
=====================================================  ==================================================

Each replaced function carries ``_fairseq_magic = True``; the original stays
reachable as its ``__wrapped__`` (``functools.wraps``).
"""

import contextlib
import functools
import logging
import os
import sys
import warnings

import torch
from fairseq import checkpoint_utils, trainer
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager

from . import checkpoint
from .errors import MagicError
from .precision import bf16_without_tpu, check_precision
from .ranges import check_config


# (category, message pattern): warnings raised inside fairseq 0.12 by its use of hydra's and torch's
# deprecated calls, on every fairseq-train; a user cannot act on them
QUIET = (
    (UserWarning, r"hydra\.experimental\.(initialize|compose)\(\) is no longer experimental"),
    (UserWarning, r"\s*The version_base parameter is not specified"),
    (UserWarning, r"In '.*': Usage of deprecated keyword in package header"),
    (UserWarning, r"\s*'.*' is validated against ConfigStore schema with the same name"),
    (UserWarning, r"\s*The strict flag in the compose API is deprecated"),
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator is found"),
    (FutureWarning, r"`torch\.cuda\.amp\.(autocast|GradScaler)\(args\.\.\.\)` is deprecated"),
)


def install() -> None:
    """Apply every patch (a second call does nothing)."""
    if getattr(checkpoint_utils.load_checkpoint_to_cpu, "_fairseq_magic", False):
        return
    for category, message in QUIET:
        warnings.filterwarnings("ignore", message=message, category=category)
    root = logging.getLogger()
    if root.level == logging.DEBUG and os.environ.get("LOGLEVEL", "").upper() != "DEBUG":
        root.setLevel(logging.INFO)
    _one_line_hydra_errors()
    if _running_fairseq_validate():
        sys.argv[1:] = validate_defaults(sys.argv[1:])
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
    bf16_without_tpu(cfg)
    check_config(cfg)
    return original(cfg, main, **kwargs)


def _precision_checked(original, self, cfg, *args, **kwargs):
    check_precision(cfg)
    return original(self, cfg, *args, **kwargs)


def _running_fairseq_validate() -> bool:
    """Whether this process is ``fairseq-validate`` (or ``python -m fairseq_cli.validate``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    as_module = getattr(spec, "name", "") == "fairseq_cli.validate"
    as_script = os.path.basename(sys.argv[0]) == "fairseq-validate" and "fairseq_cli.validate" in sys.modules
    return as_module or as_script


def validate_defaults(argv):
    """``fairseq-validate``'s arguments, with ``--task``, ``--criterion``, the batch size and the data
    folder of the ``--path`` checkpoint where they are not given. fairseq parses the task from the command
    line before it reads the checkpoint: without ``--task`` it fails with ``KeyError: None``, and
    with ``--task sentence_prediction`` alone on an interpolation of the default criterion."""
    from fairseq import options
    from fairseq.tasks import TASK_REGISTRY

    path = _option_value(argv, "--path")
    if not path or not os.path.isfile(path.split(os.pathsep)[0]):
        return argv  # fairseq says what is missing
    try:
        cfg = checkpoint.torch_load(path.split(os.pathsep)[0], mmap=True).get("cfg")
    except Exception:  # noqa: BLE001 - unreadable: fairseq's load of --path reports it in one line
        return argv
    if cfg is None:
        return argv
    argv = list(argv)
    for option, section, key in (("--task", "task", "_name"), ("--criterion", "criterion", "_name"),
                                 ("--batch-size", "dataset", "batch_size"), ("--max-tokens", "dataset", "max_tokens")):
        try:
            value = (cfg.get(section) or {}).get(key)
        except Exception:  # noqa: BLE001 - an interpolation that does not resolve outside its run: not a default
            value = None
        if value is not None and all(_option_value(argv, o) is None for o in (option, *_SAME.get(option, ()))):
            argv += [option, str(value)]
    task = _option_value(argv, "--task")
    data = str((cfg.get("task") or {}).get("data") or "")
    if task in TASK_REGISTRY and data:
        parser = options.get_validation_parser()
        TASK_REGISTRY[task].add_args(parser)
        for action in parser._actions:  # is the data folder given? ask fairseq's own parser, data optional
            if action.dest == "data":
                action.nargs, action.default, action.required = "?", None, False
        given, _ = parser.parse_known_args(argv)
        if getattr(given, "data", None) is None:
            argv.insert(0, data)
    return argv


_SAME = {"--batch-size": ("--max-sentences", "--max-tokens"), "--max-tokens": ("--batch-size", "--max-sentences")}


def _option_value(argv, option: str):
    """The value of ``option`` in ``argv`` (``--x v`` or ``--x=v``), or None."""
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg[len(option) + 1:]
    return None


def _one_line_hydra_errors() -> None:
    """hydra catches a job's exception, logs 'Error executing job' and prints a shortened
    traceback; a MagicError is one line, as everywhere else."""
    try:
        from hydra.core.utils import JobReturn
    except ImportError:  # pragma: no cover - fairseq depends on hydra
        return
    original = JobReturn.return_value

    def return_value(self):
        if isinstance(getattr(self, "_return_value", None), MagicError):
            print(f"fairseq-magic: error: {self._return_value}{_which_run(self)}", file=sys.stderr)
            sys.exit(1)
        return original.fget(self)

    JobReturn.return_value = property(return_value, original.fset)


def _which_run(job) -> str:
    """' (run OVERRIDES, in DIR)' for a job of a multirun: which of the sweep's runs failed."""
    cfg = getattr(job, "hydra_cfg", None)
    try:
        multirun = str(cfg.hydra.mode).endswith("MULTIRUN")
    except AttributeError:
        return ""
    return f" (run {' '.join(job.overrides or [])}, in {job.working_dir})" if multirun else ""


class _AtomicCopyPathManager(PathManager):
    """fairseq's PathManager, whose ``copy`` of a local checkpoint goes through a temporary file."""

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if not (checkpoint.is_local(src_path) and checkpoint.is_local(dst_path)):
            return PathManager.copy(src_path, dst_path, overwrite)
        checkpoint.atomic_copy(src_path, dst_path)
        return True
