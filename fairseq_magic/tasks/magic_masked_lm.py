"""Masked-LM training of the super-net: one sampled child per update.

One training step, from ``fairseq-train`` to the loss:

    Trainer.train_step -> MagicMaskedLMTask.train_step    (choose the child;
                                                           MAGIC-A's first anchor)
      -> FairseqTask.train_step -> criterion (criterions/magic_mlm.py)
         -> MagicSupernetModel.forward                    (only the child runs)
         -> Alignment.loss (alignment.py)                 (MAGIC-A's term)
    Trainer -> MagicMaskedLMTask.optimizer_step           (others stay frozen;
                                                           the anchor may change)

The child is a pure function of (seed, update number, previous child) (see
``samplers.py``), so every micro-batch of an update (``--update-freq``) and
every rank trains the same child without communication. What a resumed run
needs (previous child, anchor) is kept in the model's ``search_state``, which
is saved in the checkpoint.
"""

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from fairseq import utils
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask

from ..alignment import Alignment, AlignmentConfig
from ..errors import MagicError
from ..frozen import hidden_from_optimizer
from ..interference import STREAM_INTERFERENCE, sample_similarity
from ..models.supernet import MagicSupernetModel, unwrap
from ..samplers import (
    SAMPLERS, STREAM_GUMBEL, STREAM_SHRINK, build_sampler, count_children, rng_for, uniform_child, validation_children,
)
from ..relaxation import (
    ARCH_OPTIMIZERS, RELAXATIONS, ArchitectureWeights, HeldOutBatches, gumbel_noise, loss_scale,
)
from ..shrinking import apply_removals, choose_removals, full_space, is_single_child, pair_losses
from ..scoring import rank_and_world, score_children, validation_batches
from ..space import Child

logger = logging.getLogger(__name__)


@dataclass
class MagicMaskedLMConfig(MaskedLMConfig, AlignmentConfig):  # MAGIC-A's options: alignment.py
    sampler: str = field(
        default="uniform",
        metadata={"help": f"how children are sampled for training: {', '.join(sorted(SAMPLERS))} "
                  "(uniform = SPOS, gradual = MAGIC-T)"},
    )
    gradual_k: int = field(default=1, metadata={"help": "MAGIC-T: operators changed per update (paper: 1)"})
    valid_children: int = field(
        default=4, metadata={"help": "number of fixed, seeded children whose loss validation reports"}
    )
    child_log: str = field(
        default="",
        metadata={"help": "append one JSON line per training forward (update, child, anchor, weight checksum) "
                  "to this file; ranks other than 0 write FILE.rank<r>"},
    )
    score_sentences: int = field(default=256, metadata={"help": "validation sentences used to score children"})
    score_batch_size: int = field(default=32, metadata={"help": "batch size when scoring children"})
    score_subset: str = field(default="valid", metadata={"help": "data split used to score children"})
    interference_interval: int = field(
        default=0, metadata={"help": "every N updates, log interference_cos: the cosine similarity of the gradients "
                             "two children differing only in layer j+1 put on a shared operator of layer j, on one "
                             "fixed batch of --score-subset (0 = off)"}
    )
    # progressive shrinking (Sec. 5.1)
    shrink_per_epoch: int = field(
        default=0, metadata={"help": "progressive shrinking: remove this many (layer, operator) pairs at each "
                             "epoch end until one child is left (paper: 5; 0 = off)"}
    )
    shrink_children: int = field(
        default=100, metadata={"help": "progressive shrinking: children scored to judge the pairs"}
    )
    # gradient-based search (relaxation.py)
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
        default=0.0, metadata={"help": "architecture learning rate (0: darts-adam 3e-4, darts-sgd 3e-2, gaea 0.1)"}
    )
    arch_objective: ChoiceEnum(["bilevel", "erm"]) = field(
        default="bilevel",
        metadata={"help": "bilevel: theta steps on batches of --arch-subset, alternating with the weights' steps; "
                  "erm: theta and weights step together on the training batches (single-level)"},
    )
    arch_subset: str = field(
        default="valid", metadata={"help": "bilevel: the held-out split theta is trained on"}
    )
    arch_batch_size: int = field(default=16, metadata={"help": "bilevel: sentences per architecture step"})
    arch_warmup_updates: int = field(
        default=0, metadata={"help": "train the weights alone (theta fixed) for the first N updates"}
    )
    gdas_tau: float = field(default=1.0, metadata={"help": "gdas: Gumbel-softmax temperature"})


@register_task("magic_masked_lm", dataclass=MagicMaskedLMConfig)
class MagicMaskedLMTask(MaskedLMTask):
    cfg: MagicMaskedLMConfig

    @classmethod
    def setup_task(cls, cfg: MagicMaskedLMConfig, **kwargs):
        first = (cfg.data or "").split(os.pathsep)[0]
        if not os.path.isfile(os.path.join(first, "dict.txt")):
            raise MagicError(f"no dict.txt in data directory '{first}' (expected fairseq-preprocess output)")
        return super().setup_task(cfg, **kwargs)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        prefix = os.path.join(paths[(epoch - 1) % len(paths)], split)
        if os.path.isfile(prefix + ".bin") and os.path.getsize(prefix + ".bin") == 0:
            raise MagicError(f"the '{split}' split is empty: {prefix}.bin holds no tokens (an empty corpus file?)")
        return super().load_dataset(split, epoch, combine, **kwargs)

    def __init__(self, cfg: MagicMaskedLMConfig, dictionary=None):
        super().__init__(cfg, dictionary)
        if cfg.sampler not in SAMPLERS:
            raise MagicError(f"unknown sampler '{cfg.sampler}' (choose from {', '.join(sorted(SAMPLERS))})")
        if cfg.gradual_k != 1 and cfg.sampler != "gradual":
            raise MagicError(f"--gradual-k is MAGIC-T's; it needs --sampler gradual (the sampler is '{cfg.sampler}')")
        if cfg.valid_children < 1:
            raise MagicError("--valid-children must be at least 1")
        if cfg.shrink_children < 1 or cfg.shrink_per_epoch < 0 or cfg.interference_interval < 0:
            raise MagicError("--shrink-children must be >= 1, --shrink-per-epoch and --interference-interval >= 0")
        if self.relaxed and cfg.shrink_per_epoch:
            raise MagicError(f"--relaxation {cfg.relaxation} searches by gradient; it does not combine with --shrink-per-epoch")
        if self.relaxed and cfg.align_lambda > 0:
            raise MagicError(f"--relaxation {cfg.relaxation} trains no single child to align: drop --align-lambda")
        if cfg.arch_batch_size < 1 or cfg.gdas_tau <= 0 or cfg.arch_warmup_updates < 0:
            raise MagicError("--arch-batch-size must be >= 1, --gdas-tau > 0 and --arch-warmup-updates >= 0")
        self.arch: Optional[ArchitectureWeights] = None
        self._arch_batches: Optional[HeldOutBatches] = None
        self._arch_update = -1  # the update whose architecture gradient is being accumulated (erm)
        self._arch_grad, self._arch_tokens = None, 0.0
        self._arch_logged_epoch = 0
        self.sampler = None
        self._valid_archs: Tuple[object, List[Child]] = (None, [])
        self._current: Optional[Tuple[int, Child]] = None  # (update number, child)
        self.alignment: Optional[Alignment] = None  # MAGIC-A, built with the model
        self._score_batches = None
        self._probe = None
        self._probe_pending = False  # the alignment's validation metrics, once per validation

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        supernet = unwrap(model)
        space = self.space = supernet.space
        self.search_state = supernet.search_state  # saved with the model, restored on resume
        self.sampler = build_sampler(self.cfg.sampler, space, self.cfg.seed, gradual_k=self.cfg.gradual_k)
        if self.relaxed:
            self.arch = ArchitectureWeights(space.num_layers, space.num_candidates, self.cfg.arch_optimizer,
                                            self.cfg.arch_lr, options=space.layer_options)
            supernet.attach_arch_weights(self.arch)  # saved with the model; a checkpoint restores it
            if self.cfg.arch_objective == "bilevel" and not from_checkpoint:  # a missing split fails now
                self._arch_batches = HeldOutBatches(self, self.cfg.arch_subset, self.cfg.arch_batch_size, self.cfg.seed)
            logger.info(
                f"search space: {space.describe()}; gradient-based search: {self.cfg.relaxation} relaxation, "
                f"{self.cfg.arch_optimizer} (lr {self.arch.lr}), {self.cfg.arch_objective}"
                + (f" on '{self.cfg.arch_subset}'" if self.cfg.arch_objective == "bilevel" else "")
            )
            return model
        logger.info(f"search space: {space.describe()}; sampler: {self.cfg.sampler}")
        for i, child in enumerate(self.valid_archs):
            logger.info(f"validation child {i}: {space.format(child)}")
        if self.cfg.align_lambda > 0:
            self.alignment = Alignment(space, self.cfg, self.search_state, self.cfg.seed,
                                       scoring_batches=self._scoring_batches, probe_batch=self._probe_batch)
        return model

    @property
    def allowed(self):
        """Each layer's remaining candidates after progressive shrinking (None: all)."""
        return self.search_state.get("allowed")

    @property
    def valid_archs(self) -> List[Child]:
        """The fixed validation children, drawn inside the current (possibly shrunk) space."""
        key = json.dumps(self.allowed)
        if self._valid_archs[0] != key:
            self._valid_archs = (key, validation_children(self.space, self.cfg.seed, self.cfg.valid_children, self.allowed))
        return self._valid_archs[1]

    @property
    def relaxed(self) -> bool:
        """Gradient-based search (a mixture or GDAS) instead of sampled children."""
        return self.cfg.relaxation != "none"

    # ------------------------------------------------------------ training
    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        if self.relaxed and epoch > 1:  # validation may be off
            self._log_architecture(epoch - 1, validation=False)
        # Both run once per epoch end, and not again when a run resumes inside an epoch.
        if self.cfg.shrink_per_epoch > 0 and epoch > 1 and self.search_state.get("shrink_epoch") != epoch:
            self._shrink(model, epoch)
            self.search_state["shrink_epoch"] = epoch
        if self.alignment is not None:
            self.alignment.begin_epoch(epoch, model)

    def child_for_update(self, update_num: int) -> Child:
        """The child trained at ``update_num``; the same for all its micro-batches."""
        if self._current is None or self._current[0] != update_num:
            previous = None
            if self._current is not None and self._current[0] == update_num - 1:
                previous = self._current[1]
            elif self.search_state.get("last_update") == update_num - 1:  # resumed from a checkpoint
                previous = self.space.parse(self.search_state["last_child"])
            child = self.sampler(update_num, previous, self.allowed)
            self._current = (update_num, child)
            self.search_state.update(last_update=update_num, last_child=self.space.format(child))
        return self._current[1]

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if self.relaxed:
            return self._relaxed_train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        child = unwrap(model).set_child(self.child_for_update(update_num))
        if self.alignment is not None:
            self.alignment.begin_update(model, update_num)
        if self.cfg.child_log:
            self._log_child(update_num, child, unwrap(model))
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        with hidden_from_optimizer(optimizer, unwrap(model).inactive_parameters()):
            super().optimizer_step(optimizer, model, update_num)
        if self.relaxed:
            if self._erm_active(update_num):
                self._arch_step(model, self._arch_grad, self._arch_tokens)
            metrics.log_scalar("arch_entropy", self.arch.entropy(), weight=0, round=4)
            return
        if self.alignment is not None:
            self.alignment.end_update(model, update_num, self.child_for_update(update_num))
        if self.cfg.interference_interval and (update_num + 1) % self.cfg.interference_interval == 0:
            self._log_interference(model, update_num)

    def _log_interference(self, model, update_num: int) -> None:
        """One sample of the interference instrument (interference.py) on the probe
        batch: the same on every rank, and the weights are not touched."""
        start = time.perf_counter()
        rng = rng_for(self.cfg.seed, STREAM_INTERFERENCE, 1_000_000 + update_num)
        batch = self._probe_batch()
        device = next(unwrap(model).parameters()).device
        _, cosine = sample_similarity(unwrap(model), [utils.apply_to_sample(lambda t: t.to(device), batch)],
                                      rng, self.allowed)
        metrics.log_scalar("interference_cos", cosine, weight=0, round=4)
        metrics.log_scalar("interference_s", time.perf_counter() - start, weight=0, round=3)

    # ------------------------------------------------------------ gradient-based search
    def mixture(self, update_num: int, phase: int, grad: bool):
        """(weights, candidates to run per layer) for one forward. GDAS draws its
        Gumbel noise from (seed, update, phase): the same on every rank and
        micro-batch, and again after a resume."""
        with torch.set_grad_enabled(grad):
            if self.cfg.relaxation == "gdas":
                noise = gumbel_noise(rng_for(self.cfg.seed, STREAM_GUMBEL, update_num, phase), tuple(self.arch.param.shape))
                weights, chosen = self.arch.gdas(noise, self.cfg.gdas_tau)
                run = [[c] for c in chosen]
            else:
                weights = self.arch.theta()
                run = [[c for c, w in enumerate(row) if w > 0] for row in weights.detach().tolist()]
        return (weights if grad else weights.detach()), run

    def _erm_active(self, update_num: int) -> bool:
        return self.cfg.arch_objective == "erm" and update_num >= self.cfg.arch_warmup_updates

    def _relaxed_train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad):
        supernet = unwrap(model)
        if self._arch_update != update_num:  # the first micro-batch of this update
            self._arch_update = update_num
            self._arch_grad, self._arch_tokens = torch.zeros_like(self.arch.param), 0.0
            if self.cfg.arch_objective == "bilevel" and update_num >= self.cfg.arch_warmup_updates:
                self._bilevel_arch_step(model, supernet, criterion, update_num)
        erm = self._erm_active(update_num)
        weights, run = self.mixture(update_num, phase=0, grad=erm)
        supernet.set_mixture(weights, run)
        if self.cfg.child_log:
            sampled = [r[0] for r in run] if self.cfg.relaxation == "gdas" else None
            self._log_child(update_num, sampled, supernet)
        loss, sample_size, logging_output = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        if erm and self.arch.param.grad is not None:
            # fairseq's backward saw the summed loss times the fp16/AMP loss scale
            self._arch_grad += self.arch.param.grad / loss_scale(optimizer)
            self._arch_tokens += 0.0 if ignore_grad else float(sample_size)
            self.arch.param.grad = None
        return loss, sample_size, logging_output

    def _bilevel_arch_step(self, model, supernet, criterion, update_num: int) -> None:
        """One step of theta on a held-out batch, before the weights' step (DARTS,
        first order). Only theta's gradient is taken: the weights' ``.grad`` stay
        untouched."""
        if self._arch_batches is None:  # a model built from a checkpoint, then trained
            self._arch_batches = HeldOutBatches(self, self.cfg.arch_subset, self.cfg.arch_batch_size, self.cfg.seed)
        device = next(supernet.parameters()).device
        batch = utils.apply_to_sample(lambda t: t.to(device), self._arch_batches(update_num))
        supernet.set_mixture(*self.mixture(update_num, phase=1, grad=True))
        model.train()
        loss, sample_size, _ = criterion(supernet, batch)
        (grad,) = torch.autograd.grad(loss, [self.arch.param])
        self._arch_step(model, grad, float(sample_size))

    def _arch_step(self, model, grad_sum: torch.Tensor, tokens: float) -> None:
        """theta's step with the gradient of the mean per-token loss over all ranks
        (one small all-reduce: the only communication the search adds)."""
        world = rank_and_world()[1]
        if world > 1:
            packed = torch.cat([grad_sum.flatten(), grad_sum.new_tensor([tokens])])
            packed = packed.to(next(unwrap(model).parameters()).device)
            torch.distributed.all_reduce(packed)
            packed = packed.cpu()
            grad_sum, tokens = packed[:-1].view_as(grad_sum), float(packed[-1])
        if tokens > 0 and torch.isfinite(grad_sum).all():
            self.arch.step(grad_sum / tokens)

    def arch_summary(self) -> str:
        return (f"mean entropy {self.arch.entropy():.4f} nats; argmax child {self.space.format(self.arch.argmax())}")

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        self._probe_pending = True
        if self.relaxed:
            self._log_architecture(epoch)

    def _log_architecture(self, epoch: int, validation: bool = True) -> None:
        """At every validation, and at an epoch's end when no validation logged it."""
        if validation or self._arch_logged_epoch != epoch:
            self._arch_logged_epoch = epoch
            when = f" after {self._arch_update + 1} updates" if self._arch_update >= 0 else ""
            logger.info(f"architecture in epoch {epoch}{when}: {self.arch_summary()}")

    # ------------------------------------------------------------ scoring children
    def _scoring_batches(self):
        """This rank's share of the first --score-sentences sentences of --score-subset."""
        if self._score_batches is None:
            self._score_batches = validation_batches(
                self, self.cfg.score_subset, self.cfg.score_sentences, self.cfg.score_batch_size
            )
        return self._score_batches

    def _probe_batch(self):
        """The first --score-batch-size sentences of --score-subset, the same on every rank."""
        if self._probe is None:
            self._probe = validation_batches(self, self.cfg.score_subset, self.cfg.score_batch_size,
                                             self.cfg.score_batch_size, split_ranks=False)[0]
        return self._probe

    def _shrink(self, model, epoch: int) -> None:
        """Progressive shrinking at the end of epoch ``epoch - 1`` (see shrinking.py)."""
        allowed = self.allowed or full_space(self.space)
        if is_single_child(allowed):
            return
        start = time.perf_counter()
        rng = rng_for(self.cfg.seed, STREAM_SHRINK, epoch)
        children = [uniform_child(self.space, rng, allowed) for _ in range(self.cfg.shrink_children)]
        losses = [s.loss for s in score_children(model, unwrap(model), children, self._scoring_batches())]
        removals = choose_removals(allowed, pair_losses(children, losses), self.cfg.shrink_per_epoch)
        allowed = apply_removals(allowed, removals)
        self.search_state["allowed"] = allowed
        names = self.space.candidate_names
        for r in removals:
            logger.info(
                f"shrink: removed {names[r.candidate]} from layer {r.layer}: mean loss {r.mean_loss:.4f} over the "
                f"{r.children} of {len(children)} scored children that use it; the layer keeps "
                f"{', '.join(names[c] for c in allowed[r.layer])}"
            )
        remaining = count_children(self.space, allowed)
        logger.info(f"shrink: {len(removals)} pairs removed in {time.perf_counter() - start:.2f}s; "
                    f"{remaining} {'child' if remaining == 1 else 'children'} left")
        if is_single_child(allowed):
            logger.info(f"shrink: one child left: {self.space.format([options[0] for options in allowed])}")
        if self.alignment is not None:
            self.alignment.restrict(model, epoch)

    def _log_child(self, update_num: int, child: Optional[Child], supernet: MagicSupernetModel) -> None:
        """One line per training forward: the child (or, under a relaxation, theta
        and the argmax child) and a checksum of the weights."""
        rank = rank_and_world()[0]
        path = self.cfg.child_log if rank == 0 else f"{self.cfg.child_log}.rank{rank}"
        record = {"update": update_num, "rank": rank}
        if child is not None:
            record["child"] = self.space.format(child)
        if self.alignment is not None and self.alignment.anchor_arch:
            record["anchor"] = self.alignment.anchor_arch
        if self.relaxed:
            record["argmax"] = self.space.format(self.arch.argmax())
            record["theta"] = self.arch.theta().detach().tolist()
        with torch.no_grad():  # identical weights on every rank give identical sums
            record["weights"] = float(sum(p.double().sum() for p in supernet.parameters()))
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------ validation
    def valid_step(self, sample, model, criterion):
        """Loss of each fixed validation child; ``loss`` is their mean. Under a
        relaxation, ``loss`` is the argmax child's and ``mixture_loss`` the mixture's."""
        if self.relaxed:
            return self._relaxed_valid_step(sample, model, criterion)
        supernet = unwrap(model)
        if self._probe_pending and self.alignment is not None:
            self._probe_pending = False
            for key, value in self.alignment.validation_metrics(model, self.valid_archs).items():
                metrics.log_scalar(key, value, weight=0, round=4)
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

    def _relaxed_valid_step(self, sample, model, criterion):
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
