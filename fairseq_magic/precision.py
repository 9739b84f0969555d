"""Half precision needs a GPU: ``--fp16`` / ``--bf16`` on a machine without one is an error.

fairseq casts the model to float16 or bfloat16 whatever the device; on a CPU
that run crawls (one update of the paper-scale configs did not finish in ten
minutes) and says nothing. With the plugin loaded it is one line before
anything is built: the super-net's task checks the whole config
(``check_precision_of``) as fairseq sets it up for training, which also covers
``fairseq-hydra-train``, where the plugin is imported inside the job; fairseq's
Trainer checks it for every other task (``fairseq_patches.py``). A checkpoint
loaded for search or the hub is not checked: it may have been trained on a GPU. ``FAIRSEQ_MAGIC_CPU_HALF=1``
lets a run through anyway (emulated half precision, for checking fairseq's
fp16 optimizer wrappers on a tiny model).
"""

import os
import sys

import torch

from .errors import MagicError

CPU_HALF_ENV = "FAIRSEQ_MAGIC_CPU_HALF"


def check_precision(cfg) -> None:
    """MagicError when ``cfg`` asks for half precision on a CPU."""
    common = cfg.common
    half = [flag for flag in ("fp16", "bf16", "memory_efficient_fp16", "memory_efficient_bf16")
            if getattr(common, flag, False)]
    if not half or (getattr(common, "tpu", False) and _has_xla()):  # fairseq's --bf16 also sets --tpu
        return
    if os.environ.get(CPU_HALF_ENV, "").strip() not in ("", "0"):
        return
    if getattr(common, "cpu", False) or not torch.cuda.is_available():
        flags = ", ".join("--" + flag.replace("_", "-") for flag in half)
        raise MagicError(f"{flags} needs a GPU and this run has none (--cpu or no CUDA device): drop it to train "
                         "in float32 (in a hydra config: common.fp16=false, common.bf16=false)")


def bf16_without_tpu(cfg, argv=None) -> None:
    """Undo fairseq 0.12's ``--bf16`` -> ``--tpu`` coupling (``options.parse_args_and_arch`` sets
    ``args.tpu = True`` for every ``--bf16``, and a GPU run then crashes importing torch_xla):
    ``tpu`` stays on only where it was asked for (``--tpu``) or torch_xla is there. hydra's
    ``common.bf16`` never had the coupling."""
    from omegaconf import open_dict

    common = cfg.common
    if not getattr(common, "bf16", False) or not getattr(common, "tpu", False):
        return
    if "--tpu" in (sys.argv[1:] if argv is None else argv) or _has_xla():
        return
    with open_dict(cfg):
        for section in cfg.values():  # common, distributed_training, criterion, optimizer, ... carry a copy
            if hasattr(section, "get") and section.get("tpu", None) is True:
                section.tpu = False


def check_precision_of(section_cfg) -> None:
    """``check_precision`` of the whole config a section (``cfg.task``, ``cfg.model``) belongs to,
    when the section knows it (an omegaconf node does; a legacy Namespace does not)."""
    get_root = getattr(section_cfg, "_get_root", None)
    root = get_root() if callable(get_root) else None
    if root is not None and "common" in root:
        check_precision(root)


def _has_xla() -> bool:
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        return False
    return True
