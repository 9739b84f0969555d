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
