"""Gradient-based search: DARTS / GDAS with GAEA, and TangleNAS's superposition.

Every layer runs a theta-weighted mixture of its candidates (``mixture``; in a
weight-entangled space, the superposition), or one candidate drawn from a
Gumbel-softmax over theta (``gdas``). One update, top to bottom:

    train_step:  bilevel: one theta step on a held-out batch (first micro-batch)
                 model.set_mixture(theta)          the weights' forward and backward
                 erm: theta's gradient accumulated from the same backward
    end_update:  erm: theta's step (all-reduced over ranks)

theta and its optimiser (``training/arch_weights.py``) ride in the model's state dict; GDAS's
noise and the held-out batches are pure functions of (seed, update, rank), so a
resumed run continues exactly.
"""

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics

from ..errors import MagicError
from ..models.supernet import unwrap
from ..streams import STREAM_GUMBEL, rank_and_world, rng_for
from .arch_weights import ARCH_OPTIMIZERS, RELAXATIONS, ArchitectureWeights, HeldOutBatches, gumbel_noise, loss_scale
from .strategy import TrainingStrategy

logger = logging.getLogger("fairseq_magic.training.gradient_search")


@dataclass
class RelaxationConfig(FairseqDataclass):
    relaxation: ChoiceEnum(list(RELAXATIONS)) = field(
        default="none",
        metadata={"help": "none: train sampled children (--sampler); mixture: every layer outputs the theta-weighted "
                  "sum of its candidates (DARTS; TangleNAS superposition in an entangled space); gdas: one "
                  "candidate per layer from a Gumbel-softmax over theta (memory-light)"},
    )
    arch_optimizer: ChoiceEnum(list(ARCH_OPTIMIZERS)) = field(
        default="gaea",
        metadata={"help": "architecture update: darts-adam / darts-sgd (softmax logits), or gaea "
                  "(exponentiated gradient on the simplex)"},
    )
    arch_lr: float = field(
        default=0.0, metadata={"range": "[0, inf)",
                               "help": "architecture learning rate (0: darts-adam 3e-4, darts-sgd 3e-2, gaea 0.1)"}
    )
    arch_objective: ChoiceEnum(["bilevel", "erm"]) = field(
        default="bilevel",
        metadata={"help": "bilevel: theta steps on batches of --arch-subset, alternating with the weights' steps; "
                  "erm: theta and weights step together on the training batches (single-level)"},
    )
    arch_subset: str = field(default="valid", metadata={"help": "bilevel: the held-out split theta is trained on"})
    arch_batch_size: int = field(default=16, metadata={"range": "[1, inf)",
                                                       "help": "bilevel: sentences per architecture step"})
    arch_warmup_updates: int = field(
        default=0, metadata={"range": "[0, inf)",
                             "help": "train the weights alone (theta fixed) for the first N updates"}
    )
    gdas_tau: float = field(default=1.0, metadata={"range": "(0, inf)", "help": "gdas: Gumbel-softmax temperature"})


class RelaxedTraining(TrainingStrategy):
    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.shrink_per_epoch:
            raise MagicError(f"--relaxation {cfg.relaxation} searches by gradient; it does not combine with --shrink-per-epoch")
        if cfg.align_lambda > 0:
            raise MagicError(f"--relaxation {cfg.relaxation} trains no single child to align: drop --align-lambda")

    def __init__(self, space, cfg, state, data):
        super().__init__(space, cfg, state, data)
        self.arch = ArchitectureWeights(space.num_layers, space.num_candidates, cfg.arch_optimizer, cfg.arch_lr,
                                        options=space.layer_options)
        self._held_out: Optional[HeldOutBatches] = None
        self._update = -1  # the update whose architecture gradient is being accumulated (erm)
        self._grad, self._tokens = None, 0.0
        self._logged_epoch = 0
        logger.info(
            f"search space: {space.describe()}; gradient-based search: {cfg.relaxation} relaxation, "
            f"{cfg.arch_optimizer} (lr {self.arch.lr}), {cfg.arch_objective}"
            + (f" on '{cfg.arch_subset}'" if cfg.arch_objective == "bilevel" else "")
        )

    def attach(self, supernet, from_checkpoint: bool) -> None:
        supernet.attach_arch_weights(self.arch)  # saved with the model; a checkpoint restores it
        if self.cfg.arch_objective == "bilevel" and not from_checkpoint:  # a missing split fails now
            self.held_out_batches()

    def held_out_batches(self) -> HeldOutBatches:
        if self._held_out is None:
            self._held_out = HeldOutBatches(self.data, self.cfg.arch_subset, self.cfg.arch_batch_size, self.seed)
        return self._held_out

    def mixture(self, update_num: int, phase: int, grad: bool):
        """(weights, candidates to run per layer) for one forward. GDAS draws its
        Gumbel noise from (seed, update, phase): the same on every rank and
        micro-batch, and again after a resume."""
        with torch.set_grad_enabled(grad):
            if self.cfg.relaxation == "gdas":
                noise = gumbel_noise(rng_for(self.seed, STREAM_GUMBEL, update_num, phase), tuple(self.arch.param.shape))
                weights, chosen = self.arch.gdas(noise, self.cfg.gdas_tau)
                run = [[c] for c in chosen]
            else:
                weights = self.arch.theta()
                run = [[c for c, w in enumerate(row) if w > 0] for row in weights.detach().tolist()]
        return (weights if grad else weights.detach()), run

    # ------------------------------------------------------------ training
    def begin_epoch(self, epoch: int, model) -> None:
        if epoch > 1:  # validation may be off
            self._log_architecture(epoch - 1, validation=False)

    def _erm_active(self, update_num: int) -> bool:
        return self.cfg.arch_objective == "erm" and update_num >= self.cfg.arch_warmup_updates

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad, fairseq_step):
        supernet = unwrap(model)
        if self._update != update_num:  # the first micro-batch of this update
            self._update = update_num
            self._grad, self._tokens = torch.zeros_like(self.arch.param), 0.0
            if self.cfg.arch_objective == "bilevel" and update_num >= self.cfg.arch_warmup_updates:
                self._bilevel_step(model, supernet, criterion, update_num)
        erm = self._erm_active(update_num)
        weights, run = self.mixture(update_num, phase=0, grad=erm)
        supernet.set_mixture(weights, run)
        if self.cfg.child_log:
            record = {"child": self.space.format([r[0] for r in run])} if self.cfg.relaxation == "gdas" else {}
            record.update(argmax=self.space.format(self.arch.argmax()), theta=self.arch.theta().detach().tolist())
            self.write_child_log(update_num, supernet, record)
        loss, sample_size, logging_output = fairseq_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        if erm and self.arch.param.grad is not None:
            # fairseq's backward saw the summed loss times the fp16/AMP loss scale
            self._grad += self.arch.param.grad / loss_scale(optimizer)
            self._tokens += 0.0 if ignore_grad else float(sample_size)
            self.arch.param.grad = None
        return loss, sample_size, logging_output

    def end_update(self, model, update_num: int) -> None:
        if self._erm_active(update_num):
            self._arch_step(model, self._grad, self._tokens)
        metrics.log_scalar("arch_entropy", self.arch.entropy(), weight=0, round=4)

    def _bilevel_step(self, model, supernet, criterion, update_num: int) -> None:
        """One step of theta on a held-out batch, before the weights' step (DARTS,
        first order). Only theta's gradient is taken: the weights' ``.grad`` stay
        untouched."""
        device = next(supernet.parameters()).device
        batch = utils.apply_to_sample(lambda t: t.to(device), self.held_out_batches()(update_num))
        supernet.set_mixture(*self.mixture(update_num, phase=1, grad=True))
        model.train()
        loss, sample_size, _ = criterion(supernet, batch)
        (grad,) = torch.autograd.grad(loss, [self.arch.param])
        self._arch_step(model, grad, float(sample_size))

    def _arch_step(self, model, grad_sum: torch.Tensor, tokens: float) -> None:
        """theta's step with the gradient of the mean per-token loss over all ranks
        (one small all-reduce: the only communication the search adds)."""
        if rank_and_world()[1] > 1:
            packed = torch.cat([grad_sum.flatten(), grad_sum.new_tensor([tokens])])
            packed = packed.to(next(unwrap(model).parameters()).device)
            torch.distributed.all_reduce(packed)
            packed = packed.cpu()
            grad_sum, tokens = packed[:-1].view_as(grad_sum), float(packed[-1])
        if tokens > 0 and torch.isfinite(grad_sum).all():
            self.arch.step(grad_sum / tokens)

    def _log_architecture(self, epoch: int, validation: bool = True) -> None:
        """At every validation, and at an epoch's end when no validation logged it."""
        if validation or self._logged_epoch != epoch:
            self._logged_epoch = epoch
            when = f" after {self._update + 1} updates" if self._update >= 0 else ""
            logger.info(f"architecture in epoch {epoch}{when}: mean entropy {self.arch.entropy():.4f} nats; "
                        f"argmax child {self.space.format(self.arch.argmax())}")

    # ------------------------------------------------------------ validation
    def begin_valid_epoch(self, epoch: int, model) -> None:
        self._log_architecture(epoch)

    def valid_step(self, sample, model, criterion):
        """``loss``: the argmax child's; ``mixture_loss``: the mixture's."""
        supernet = unwrap(model)
        model.eval()
        with torch.no_grad():
            supernet.set_mixture(self.arch.theta().detach(), self.space.layer_options)
            mixture_loss, _, _ = criterion(model, sample)
            with supernet.child_context(self.arch.argmax()):
                loss, sample_size, logging_output = criterion(model, sample)
        logging_output = dict(logging_output)
        logging_output["mixture_loss"] = mixture_loss.data
        metrics.log_scalar("arch_entropy", self.arch.entropy(), weight=0, round=4)
        return loss, sample_size, logging_output
