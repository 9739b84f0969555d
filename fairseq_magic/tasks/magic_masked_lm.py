"""Masked-LM training of the super-net: one sampled child per update.

One training step, from ``fairseq-train`` to the loss:

    Trainer.train_step -> MagicMaskedLMTask.train_step   (choose the child)
      -> FairseqTask.train_step -> criterion (criterions/magic_mlm.py)
         -> MagicSupernetModel.forward                    (only the child runs)
    Trainer -> MagicMaskedLMTask.optimizer_step           (others stay frozen)

The child is a pure function of (seed, update number, previous child) (see
``samplers.py``), so every micro-batch of an update (``--update-freq``) and
every rank trains the same child without communication, and a resumed run
samples exactly what the uninterrupted run would have.
"""

import json
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask

from ..errors import MagicError
from ..frozen import hidden_from_optimizer
from ..models.supernet import MagicSupernetModel
from ..samplers import SAMPLERS, build_sampler, validation_children
from ..space import Child

logger = logging.getLogger(__name__)


@dataclass
class MagicMaskedLMConfig(MaskedLMConfig):
    sampler: str = field(
        default="uniform",
        metadata={"help": f"how children are sampled for training: {', '.join(sorted(SAMPLERS))}"},
    )
    valid_children: int = field(
        default=4,
        metadata={"help": "number of fixed, seeded children whose loss validation reports"},
    )
    child_log: str = field(
        default="",
        metadata={"help": "append one JSON line per training forward (update, child, rank) to this file; "
                  "ranks other than 0 write FILE.rank<r>"},
    )


def unwrap(model) -> MagicSupernetModel:
    """The super-net inside fairseq's distributed wrappers."""
    while not isinstance(model, MagicSupernetModel) and hasattr(model, "module"):
        model = model.module
    if not isinstance(model, MagicSupernetModel):
        raise MagicError(
            f"task magic_masked_lm trains a super-net (--arch magic_supernet*), got {type(model).__name__}"
        )
    return model


@register_task("magic_masked_lm", dataclass=MagicMaskedLMConfig)
class MagicMaskedLMTask(MaskedLMTask):
    cfg: MagicMaskedLMConfig

    @classmethod
    def setup_task(cls, cfg: MagicMaskedLMConfig, **kwargs):
        first = (cfg.data or "").split(os.pathsep)[0]
        if not os.path.isfile(os.path.join(first, "dict.txt")):
            raise MagicError(f"no dict.txt in data directory '{first}' (expected fairseq-preprocess output)")
        return super().setup_task(cfg, **kwargs)

    def __init__(self, cfg: MagicMaskedLMConfig, dictionary=None):
        super().__init__(cfg, dictionary)
        if cfg.sampler not in SAMPLERS:
            raise MagicError(f"unknown sampler '{cfg.sampler}' (choose from {', '.join(sorted(SAMPLERS))})")
        if cfg.valid_children < 1:
            raise MagicError("--valid-children must be at least 1")
        self.sampler = None
        self.valid_archs: List[Child] = []
        self._current: Optional[Tuple[int, Child]] = None  # (update number, child)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        space = unwrap(model).space
        self.space = space
        self.sampler = build_sampler(self.cfg.sampler, space, self.cfg.seed)
        self.valid_archs = validation_children(space, self.cfg.seed, self.cfg.valid_children)
        logger.info(f"search space: {space.describe()}; sampler: {self.cfg.sampler}")
        for i, child in enumerate(self.valid_archs):
            logger.info(f"validation child {i}: {space.format(child)}")
        return model

    # ------------------------------------------------------------ training
    def child_for_update(self, update_num: int) -> Child:
        """The child trained at ``update_num``; the same for all its micro-batches."""
        if self._current is None or self._current[0] != update_num:
            previous = self._current[1] if self._current is not None else None
            self._current = (update_num, self.sampler(update_num, previous))
        return self._current[1]

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        child = unwrap(model).set_child(self.child_for_update(update_num))
        if self.cfg.child_log:
            self._log_child(update_num, child)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        with hidden_from_optimizer(optimizer, unwrap(model).inactive_parameters()):
            super().optimizer_step(optimizer, model, update_num)

    def _log_child(self, update_num: int, child: Child) -> None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        path = self.cfg.child_log if rank == 0 else f"{self.cfg.child_log}.rank{rank}"
        with open(path, "a") as f:
            f.write(json.dumps({"update": update_num, "child": self.space.format(child), "rank": rank}) + "\n")

    # ------------------------------------------------------------ validation
    def valid_step(self, sample, model, criterion):
        """Loss of each fixed validation child; ``loss`` is their mean."""
        supernet = unwrap(model)
        model.eval()
        total, logging_output = 0.0, {}
        with torch.no_grad():
            for i, child in enumerate(self.valid_archs):
                with supernet.child_context(child):
                    loss, sample_size, out = criterion(model, sample)
                if not logging_output:
                    logging_output = dict(out)
                logging_output[f"child{i}_loss"] = out["loss"]
                total = total + loss
        mean = total / len(self.valid_archs)
        logging_output["loss"] = mean.data if torch.is_tensor(mean) else mean
        return mean, sample_size, logging_output
