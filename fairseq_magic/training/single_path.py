"""SPOS, MAGIC-T, FairNAS and the fair gradual walk: the super-net trains one
sampled child per update (per micro-batch for FairNAS).

One update, top to bottom (the task's hooks call these):

    train_step:  child = child_for_update(t, i)   the sampler's choice (training/samplers.py)
                 model.set_child(child)            only the child runs
                 alignment.begin_update(t)         MAGIC-A: the first anchor, when it starts
                 fairseq's train_step              criterion: masked-LM loss (+ alignment term)
    optimizer step                                 moves the operators of the update's children (with
                                                   --sampler fair, every micro-batch's child), no other
    end_update:  the step counted                  in the training shares (training/training_share.py)
                 alignment.end_update(t, child)    MAGIC-A: the anchor may be replaced
                 share_sd, adjacent_share_sd       logged (weight 0: the latest value)
                 interference sample               every --interference-interval updates

The child is a pure function of (seed, update number, micro-batch, previous
child, training counts), so every rank trains the same child without
communication; every micro-batch of an update (``--update-freq``) trains the
same child, except with ``--sampler fair``, where micro-batch i trains the
window's i-th child and the one optimizer step moves every operator any of the
update's children used, with their summed gradients (FairNAS). ``--fair-step
last-child`` is an ablation that keeps the defect of earlier versions: the step
moved only the last micro-batch's child's operators (the shared embeddings and
output layer still took every child's gradient). The child of the last update,
the training counts, the shrunk space and the anchor are in the
``SearchState``, which the checkpoint carries.
"""

import json
import logging
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from fairseq.dataclass import ChoiceEnum
from omegaconf import II

import torch
from fairseq import utils
from fairseq.logging import metrics

from ..analysis.interference import sample_similarity
from ..models.supernet import unwrap
from ..search.scoring import score_children, validation_batches
from ..space import Child, SpaceError
from ..streams import INTERFERENCE_DURING_TRAINING, STREAM_INTERFERENCE, STREAM_SHRINK, rng_for
from .alignment import Alignment
from .samplers import SAMPLERS, build_sampler, check_sampler, count_children, uniform_child, validation_children
from .shrinking import apply_removals, choose_removals, full_space, is_single_child, pair_losses
from .strategy import StrategyConfig, TrainingStrategy
from .training_share import TrainingShares

logger = logging.getLogger("fairseq_magic.training.single_path")

FAIR_STEPS = ["all-children", "last-child"]  # --fair-step: FairNAS's step, and the ablation of the old defect


@dataclass
class SampledConfig(StrategyConfig):
    sampler: str = field(
        default="uniform",
        metadata={"help": f"how children are sampled for training: {', '.join(sorted(SAMPLERS))} "
                  "(uniform = SPOS; gradual = MAGIC-T; fair = FairNAS, one child per micro-batch, each layer "
                  "taking each of its C candidates once per C children: use --update-freq C; fair-gradual = "
                  "MAGIC-T's walk with its moves drawn to keep every operator's training near its fair share)"},
    )
    gradual_k: int = field(default=1, metadata={"range": "[1, inf)",
                                                "help": "gradual and fair-gradual: operators changed per update "
                                                "(MAGIC-T paper: 1)"})
    valid_children: int = field(
        default=4, metadata={"range": "[1, inf)",
                             "help": "number of fixed, seeded children whose loss validation reports"}
    )
    interference_interval: int = field(
        default=0, metadata={"range": "[0, inf)",
                             "help": "every N updates, log interference_cos: the cosine similarity of the gradients "
                             "two children differing only in layer j+1 put on a shared operator of layer j, on one "
                             "fixed batch of --score-subset (0 = off)"}
    )
    # progressive shrinking (Sec. 5.1)
    shrink_per_epoch: int = field(
        default=0, metadata={"range": "[0, inf)",
                             "help": "progressive shrinking: remove this many (layer, operator) pairs at each "
                             "epoch end until one child is left (paper: 5; 0 = off)"}
    )
    shrink_children: int = field(
        default=100, metadata={"range": "[1, inf)", "help": "progressive shrinking: children scored to judge the pairs"}
    )
    fair_step: ChoiceEnum(FAIR_STEPS) = field(
        default="all-children",
        metadata={"help": "--sampler fair: what one update's optimizer step moves. all-children (FairNAS): every "
                  "operator any micro-batch's child used, with the summed gradients; last-child: an ablation "
                  "that keeps the defect of earlier versions: only the last micro-batch's child's operators "
                  "(the shared embeddings and output layer still take all the children's gradients)"},
    )
    update_freq: List[int] = II("optimization.update_freq")  # the fair sampler's children per update


class SampledTraining(TrainingStrategy):
    @classmethod
    def check_config(cls, cfg) -> None:
        check_sampler(cfg.sampler, cfg.gradual_k)
        if cfg.fair_step != "all-children" and not SAMPLERS[cfg.sampler].per_micro_batch:
            raise SpaceError(f"--fair-step {cfg.fair_step} is an ablation of FairNAS's step; it needs --sampler fair "
                             f"(the sampler is '{cfg.sampler}', whose micro-batches all train one child)")

    def __init__(self, space, cfg, state, data):
        super().__init__(space, cfg, state, data)
        self.sampler = build_sampler(cfg.sampler, space, self.seed, gradual_k=cfg.gradual_k,
                                     micro_batches=self.update_freq(1))
        self._micro = (None, 0)  # (update, index of its micro-batch now training)
        self._update_children: Tuple[Optional[int], List[Child]] = (None, [])  # (update, its children so far)
        self._valid: Tuple[Optional[str], List[Child]] = (None, [])
        self._score_batches: Optional[List[dict]] = None
        self._probe: Optional[dict] = None
        self._probe_pending = False  # the alignment's validation metrics, once per validation
        self._announced = False  # the validation children logged
        logger.info(f"search space: {space.describe()}; sampler: {cfg.sampler}")
        if self.sampler.per_micro_batch:
            window, freq = self.sampler.window, self.update_freq(1)
            logger.info(f"fair sampler: each layer takes each of its candidates once per window of {window} children, "
                        f"one child per micro-batch; --update-freq {freq}: "
                        + ("one window per update (FairNAS's strict fairness)" if freq % window == 0 else
                           f"a window spans {window / freq:g} updates (use --update-freq {window} for FairNAS's "
                           "strict fairness: one update sums the gradients of a whole window)"))
        if cfg.align_lambda > 0:
            self.alignment = Alignment(space, cfg, state, self.seed, scoring_batches=self.scoring_batches,
                                       probe_batch=self.probe_batch)

    @property
    def allowed(self):
        """Each layer's remaining candidates after progressive shrinking (None: all)."""
        return self.state.allowed

    @property
    def valid_children(self) -> List[Child]:
        """The fixed validation children, drawn inside the current (possibly shrunk) space."""
        key = json.dumps(self.allowed)
        if self._valid[0] != key:
            self._valid = (key, validation_children(self.space, self.seed, self.cfg.valid_children, self.allowed))
        return self._valid[1]

    def update_freq(self, epoch: int) -> int:
        """Micro-batches per update in ``epoch`` (fairseq's --update-freq, one value or one per epoch)."""
        freq = list(self.cfg.update_freq)
        return int(freq[min(epoch, len(freq)) - 1])

    @property
    def shares(self) -> TrainingShares:
        """How often each (layer, operator) and adjacent combination was trained (in the search state)."""
        return TrainingShares(self.space, self.state.visits)

    def child_for_update(self, update_num: int, micro: int = 0) -> Child:
        """The child trained at ``update_num`` (its micro-batch ``micro``: only the
        fair sampler gives micro-batches different children). Drawn once, from the
        previous update's child and the training counts (both kept in the search
        state, so a resumed run continues the walk), and counted."""
        state = self.state
        micro = micro if self.sampler.per_micro_batch else None
        if state.update != update_num or state.micro != micro:
            previous = self.space.parse(state.child) if state.child and state.update == update_num - 1 else None
            child = self.sampler(update_num, previous, self.allowed, micro=micro or 0, shares=self.shares)
            state.child, state.update, state.micro = self.space.format(child), update_num, micro
        return self.space.parse(state.child)

    def micro_batch(self, update_num: int) -> int:
        """Which micro-batch of ``update_num`` this train_step is (fairseq calls it once per micro-batch;
        an update fairseq repeats after a gradient overflow starts again at 0)."""
        update, count = self._micro
        count = count + 1 if update == update_num else 0
        self._micro = (update_num, count)
        return count % self.sampler.micro_batches if self.sampler.per_micro_batch else count

    def update_children(self, update_num: int) -> List[Child]:
        """The distinct children trained so far in ``update_num``, in order."""
        update, children = self._update_children
        return children if update == update_num else []

    def stepped_children(self) -> List[Child]:
        """The children whose operators this update's optimizer step moves: all of the update's
        (``--fair-step last-child``: the last micro-batch's alone)."""
        current = self.space.parse(self.state.child)
        children = self.update_children(self.state.update) or [current]
        return [current] if self.cfg.fair_step == "last-child" else children

    # ------------------------------------------------------------ training
    def begin_epoch(self, epoch: int, model) -> None:
        if not self._announced:  # when a run trains (not when search or fairseq-validate load the task)
            self._announced = True
            for i, child in enumerate(self.valid_children):
                logger.info(f"validation child {i}: {self.space.format(child)}")
        # once per epoch end, and not again when a run resumes inside an epoch
        if self.sampler.per_micro_batch:
            self.sampler.micro_batches = self.update_freq(epoch)
        if self.cfg.shrink_per_epoch > 0 and epoch > 1 and self.state.shrink_epoch != epoch:
            self._shrink(model, epoch)
            self.state.shrink_epoch = epoch
        if self.alignment is not None:
            self.alignment.begin_epoch(epoch, model)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad, fairseq_step):
        child = unwrap(model).set_child(self.child_for_update(update_num, self.micro_batch(update_num)))
        children = self.update_children(update_num)
        self._update_children = (update_num, children + [child] if child not in children else children)
        if self.alignment is not None:
            self.alignment.begin_update(model, update_num)
        if self.cfg.child_log:
            record = {"child": self.space.format(child)}
            if self.alignment is not None and self.alignment.anchor_arch:
                record["anchor"] = self.alignment.anchor_arch
            self.write_child_log(update_num, unwrap(model), record)
        return fairseq_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def inactive_parameters(self, supernet) -> list:
        """The operators none of the update's stepped children used (FairNAS: the whole window's)."""
        return supernet.unused_by(self.stepped_children())

    def end_update(self, model, update_num: int) -> None:
        shares = self.shares
        shares.add_step(self.stepped_children())  # what the optimizer moved
        self.state.visits = shares.to_dict()
        self._update_children = (None, [])
        if self.alignment is not None:  # with the fair sampler: the update's last child
            self.alignment.end_update(model, update_num, self.space.parse(self.state.child))
        metrics.log_scalar("share_sd", shares.share_sd(self.allowed), weight=0, round=4)
        metrics.log_scalar("adjacent_share_sd", shares.adjacent_share_sd(self.allowed), weight=0, round=4)
        if self.cfg.interference_interval and (update_num + 1) % self.cfg.interference_interval == 0:
            self._log_interference(model, update_num)

    def _log_interference(self, model, update_num: int) -> None:
        """One sample of the interference instrument (analysis/interference.py) on the probe
        batch: the same on every rank, and the weights are not touched."""
        start = time.perf_counter()
        rng = rng_for(self.seed, STREAM_INTERFERENCE, INTERFERENCE_DURING_TRAINING + update_num)
        supernet = unwrap(model)
        device = next(supernet.parameters()).device
        batch = utils.apply_to_sample(lambda t: t.to(device), self.probe_batch())
        _, cosine = sample_similarity(supernet, [batch], rng, self.allowed)
        metrics.log_scalar("interference_cos", cosine, weight=0, round=4)
        metrics.log_scalar("interference_s", time.perf_counter() - start, weight=0, round=3)

    # ------------------------------------------------------------ progressive shrinking
    def _shrink(self, model, epoch: int) -> None:
        """Progressive shrinking at the end of epoch ``epoch - 1`` (see training/shrinking.py)."""
        allowed = self.allowed or full_space(self.space)
        if is_single_child(allowed):
            return
        start = time.perf_counter()
        rng = rng_for(self.seed, STREAM_SHRINK, epoch)
        children = [uniform_child(self.space, rng, allowed) for _ in range(self.cfg.shrink_children)]
        losses = [s.loss for s in score_children(model, unwrap(model), children, self.scoring_batches())]
        removals = choose_removals(allowed, pair_losses(children, losses), self.cfg.shrink_per_epoch)
        allowed = apply_removals(allowed, removals)
        self.state.allowed = allowed
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

    # ------------------------------------------------------------ scoring data
    def scoring_batches(self) -> List[dict]:
        """This rank's share of the first --score-sentences sentences of --score-subset."""
        if self._score_batches is None:
            self._score_batches = validation_batches(
                self.data, self.cfg.score_subset, self.cfg.score_sentences, self.cfg.score_batch_size
            )
        return self._score_batches

    def probe_batch(self) -> dict:
        """The first --score-batch-size sentences of --score-subset, the same on every rank."""
        if self._probe is None:
            self._probe = validation_batches(self.data, self.cfg.score_subset, self.cfg.score_batch_size,
                                             self.cfg.score_batch_size, split_ranks=False)[0]
        return self._probe

    # ------------------------------------------------------------ validation
    def begin_valid_epoch(self, epoch: int, model) -> None:
        self._probe_pending = True

    def valid_step(self, sample, model, criterion):
        """Loss of each fixed validation child; ``loss`` is their mean."""
        supernet = unwrap(model)
        if self._probe_pending and self.alignment is not None:
            self._probe_pending = False
            for key, value in self.alignment.validation_metrics(model, self.valid_children).items():
                metrics.log_scalar(key, value, weight=0, round=4)
        model.eval()
        total, logging_output = 0.0, {}
        with torch.no_grad():
            for i, child in enumerate(self.valid_children):
                with supernet.child_context(child):
                    loss, sample_size, out = criterion(model, sample)
                if not logging_output:
                    logging_output = dict(out)
                logging_output[f"child{i}_loss"] = out["loss"]
                total = total + loss
        mean = total / len(self.valid_children)
        logging_output["loss"] = mean.data if torch.is_tensor(mean) else mean
        return mean, sample_size, logging_output
