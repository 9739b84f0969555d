"""``--task magic_masked_lm``: fairseq's masked-LM task training a super-net.

The task is an adapter: it holds the options, loads data as fairseq's
``masked_lm`` does, and hands every hook to a training strategy
(``training/``) chosen from the options:

    --relaxation none (default)   training/single_path.py      SPOS, MAGIC-T, FairNAS (--sampler), MAGIC-A
                                                               (--align-lambda: alignment.py, anchor.py), shrinking
    --relaxation mixture | gdas   training/gradient_search.py  DARTS, GDAS, GAEA, TangleNAS

One training step, from ``fairseq-train`` to the loss:

    Trainer.train_step -> task.train_step -> strategy.train_step     (sets the child)
      -> FairseqTask.train_step -> criterion (criterions/magic_mlm.py)
         -> masked_lm_loss (same file) + task.alignment's term (training/alignment.py)
    Trainer -> task.optimizer_step          (operators no child of the update used hidden from the optimizer)
      -> strategy.end_update                (anchor decisions, theta's step, ...)
"""

import os
from dataclasses import dataclass

from fairseq import utils
from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask

from ..errors import MagicError
from ..models.supernet import unwrap
from ..precision import check_precision_of
from ..ranges import check_section
from ..training import RelaxationConfig, SampledConfig, TrainingStrategy, strategy_class
from ..training.alignment import AlignmentConfig
from ..training.anchor import AnchorConfig
from ..training.frozen import hidden_from_optimizer


@dataclass
class MagicMaskedLMConfig(MaskedLMConfig, SampledConfig, RelaxationConfig, AnchorConfig, AlignmentConfig):
    """fairseq's masked-LM options plus each strategy's own (their files document them)."""


@register_task("magic_masked_lm", dataclass=MagicMaskedLMConfig)
class MagicMaskedLMTask(MaskedLMTask):
    cfg: MagicMaskedLMConfig

    @classmethod
    def setup_task(cls, cfg: MagicMaskedLMConfig, **kwargs):
        check_section(cfg, MagicMaskedLMConfig)
        if not kwargs.get("from_checkpoint"):  # a run about to train (a loaded checkpoint may run anywhere)
            check_precision_of(cfg)
        first = (cfg.data or "").split(os.pathsep)[0]
        if not os.path.isfile(os.path.join(first, "dict.txt")):
            raise MagicError(f"no dict.txt in data directory '{first}' (expected fairseq-preprocess output)")
        return super().setup_task(cfg, **kwargs)

    def __init__(self, cfg: MagicMaskedLMConfig, dictionary=None):
        super().__init__(cfg, dictionary)
        self.strategy_class = strategy_class(cfg)
        self.strategy_class.check_config(cfg)  # bad options fail before a model is built
        folder = os.path.dirname(os.path.abspath(cfg.child_log)) if cfg.child_log else ""
        if folder and not os.path.isdir(folder):
            raise MagicError(f"--child-log {cfg.child_log}: there is no folder {folder} to write it in")
        self.strategy: TrainingStrategy = None  # built with the model, whose search state it shares

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        prefix = os.path.join(paths[(epoch - 1) % len(paths)], split)
        if os.path.isfile(prefix + ".bin") and os.path.getsize(prefix + ".bin") == 0:
            raise MagicError(f"the '{split}' split is empty: {prefix}.bin holds no tokens (an empty corpus file?)")
        if not any(os.path.exists(prefix + end) for end in (".bin", ".idx", "")):
            advice = "fairseq-preprocess --validpref makes one (or train with --disable-validation)" \
                if split == "valid" else "choose an existing split"
            raise MagicError(f"no '{split}' split in {os.path.dirname(prefix)} (no {split}.bin/.idx): {advice}")
        return super().load_dataset(split, epoch, combine, **kwargs)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        supernet = unwrap(model)
        self.strategy = self.strategy_class(supernet.space, self.cfg, supernet.search_state, data=self)
        self.strategy.attach(supernet, from_checkpoint)
        return model

    @property
    def alignment(self):
        """MAGIC-A's term, for the criterion (None when alignment is off)."""
        return self.strategy.alignment if self.strategy is not None else None

    # ------------------------------------------------------------ fairseq's hooks
    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        self.strategy.begin_epoch(epoch, model)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        return self.strategy.train_step(sample, model, criterion, optimizer, update_num, ignore_grad,
                                        fairseq_step=super().train_step)

    def optimizer_step(self, optimizer, model, update_num):
        with hidden_from_optimizer(optimizer, self.strategy.inactive_parameters(unwrap(model))):
            super().optimizer_step(optimizer, model, update_num)
        self.strategy.end_update(model, update_num)

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        self.strategy.begin_valid_epoch(epoch, model)

    def valid_step(self, sample, model, criterion):
        return self.strategy.valid_step(sample, model, criterion)
