"""MAGIC-A: the hidden states of every trained child aligned to an anchor child
(Sec. 4, Eq. 1-2; App. A.2 for the average target):

    L = L_mlm + lambda_t * sum_{n in aligned layers} MSE(H_n(anchor), H_n(child))

This module owns the alignment term: lambda and its schedule, which layers
are aligned, the warm-up, the targets (the anchor's H_n, or the mean of random
children's) and the term itself; the anchor child, its options and decisions are
``training/anchor.py``'s. The training strategy (``single_path.py``) calls its
hooks (``begin_epoch``, ``begin_update``, ``end_update``, ``restrict``,
``validation_metrics``), which pass the anchor's on while alignment is on; the
criterion asks for the term (``loss``) and its weight (``weight``).

What the paper leaves open, and what is done here:

* Aligned layers: the outputs of every b-th layer, H_b, H_2b, ..., never the
  final layer unless ``--align-final-layer``: aligning the last layer is
  distillation on the final layer, which the paper says MAGIC-A is not.
* Dropout (``--align-dropout``). The anchor's H_n are always targets without a
  graph. ``clean`` (default): the child's aligned H_n come from a second,
  dropout-free forward of its layers up to the last aligned one, so the term
  measures how far the child's representations are from the anchor's, not
  dropout noise; the masked-LM loss still comes from the ordinary forward with
  dropout. The anchor's forward then starts from the child's clean states of
  the layers the two share (at least H_0): the same numbers for less work.
  ``train-eval`` (the first implementation): the child's H_n are taken
  from its training forward (dropout on), the anchor's in eval mode; the MSE
  then carries a dropout floor that no alignment can remove. ``train-train``:
  both with dropout (independent masks). At each validation the floor
  (the anchor's H_n with and without dropout, ``align_floor``) and the
  dropout-free distance of the validation children to the anchor
  (``align_gap``) are logged, on one fixed probe batch.
* ``--align-batch-fraction f`` (default 0.25): the term on a seeded random f
  of each batch's sentences. Its expectation is unchanged (a mean over tokens
  of a random subset), its noise grows, and the extra forwards and backward
  shrink by f. Measured: a quarter ranks the children as all sentences do
  (tau within 0.006 per seed, 5 seeds; ``examples/sweeps/README.md``) at
  1.17x SPOS's step instead of 1.6x (``benchmarks/magic_step.py``).
* The first anchor: the best of ``--anchor-init-children`` children scored
  with the shared weights on the scoring sentences when alignment starts.
* Replacement (``best`` policy): a paired test on per-sentence scores; the
  trained child must be better by more than ``--anchor-replace-z`` standard
  errors.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..errors import MagicError
from ..models.search_state import SearchState
from ..models.supernet import train_mode, unwrap, wrappers
from ..space import Child, SearchSpace
from ..streams import STREAM_ALIGN_SENTENCES, STREAM_AVERAGE_TARGET, rng_for
from .anchor import Anchor
from .samplers import uniform_child

logger = logging.getLogger(__name__)

DROPOUT_MODES = ("clean", "train-eval", "train-train")
SCHEDULES = ("constant", "linear-decay")


@dataclass
class AlignmentConfig(FairseqDataclass):
    align_lambda: float = field(
        default=0.0, metadata={"range": "[0, inf)",
                               "help": "MAGIC-A: weight of the alignment term (paper: 0.5; 0 = off)"}
    )
    align_every: int = field(
        default=4, metadata={"range": "[1, inf)", "help": "MAGIC-A: align the outputs of every b-th layer (paper: 4)"}
    )
    align_final_layer: bool = field(
        default=False, metadata={"help": "MAGIC-A: also align the final layer's output (distillation; off in the paper)"}
    )
    align_dropout: ChoiceEnum(list(DROPOUT_MODES)) = field(
        default="clean",
        metadata={"help": "MAGIC-A: clean: the child's aligned states from a dropout-free forward; train-eval: from "
                  "its training forward (dropout), the anchor's without; train-train: both with dropout"},
    )
    align_batch_fraction: float = field(
        default=0.25,
        metadata={"range": "(0, 1]",
                  "help": "MAGIC-A: align the states of this fraction of each batch's sentences (a seeded draw "
                  "per update): the same term in expectation, for a fraction of the work (1: all sentences)"},
    )
    align_lambda_schedule: ChoiceEnum(list(SCHEDULES)) = field(
        default="constant",
        metadata={"help": "MAGIC-A: constant lambda (paper), or linear-decay to 0 over the last "
                  "--align-decay-fraction of --max-update"},
    )
    align_decay_fraction: float = field(
        default=0.25, metadata={"range": "(0, 1]",
                                "help": "MAGIC-A: linear-decay: the final fraction of training over which lambda "
                                        "falls to 0"}
    )
    align_warmup_epochs: int = field(
        default=3, metadata={"range": "[0, inf)", "help": "MAGIC-A: no alignment during the first N epochs (paper: 3)"}
    )
    align_warmup_updates: int = field(default=0, metadata={"range": "[0, inf)",
                                                           "help": "MAGIC-A: no alignment before this many updates"})
    align_target: ChoiceEnum(["anchor", "average"]) = field(
        default="anchor", metadata={"help": "align to the anchor child, or to the mean H_n of random children (App. A.2)"}
    )
    align_avg_children: int = field(default=4, metadata={"range": "[1, inf)",
                                                         "help": "children averaged by --align-target average"})
    max_update: int = II("optimization.max_update")


def aligned_layers(num_layers: int, every: int, final: bool = False) -> List[int]:
    """Indices n of H_n taken for alignment: the end of every ``every`` layers,
    without the final layer's output H_N unless ``final``."""
    return [n for n in range(every, num_layers + 1, every) if final or n < num_layers]


def masked_mse(states: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
    """sum_n MSE(H_n, target_n), each a mean over non-padding tokens and channels.
    ``states``/``targets``: (T, B, C) each; ``keep``: (T, B, 1), 1 at real tokens."""
    denom = keep.sum() * states[0].size(-1)
    return sum((((s.float() - t.float()) ** 2) * keep).sum() / denom for s, t in zip(states, targets))


class Alignment:
    """MAGIC-A for one training run. ``scoring_batches()`` gives this rank's share of
    the scoring sentences, ``probe_batch()`` one fixed batch that is the same on every rank."""

    def __init__(self, space: SearchSpace, cfg: AlignmentConfig, search_state: SearchState, seed: int,
                 scoring_batches: Callable[[], List[dict]], probe_batch: Callable[[], dict]):
        if cfg.align_lambda <= 0:
            raise MagicError("MAGIC-A needs --align-lambda > 0")
        self.layers = aligned_layers(space.num_layers, cfg.align_every, cfg.align_final_layer)
        if not self.layers:
            raise MagicError(
                f"--align-every {cfg.align_every} leaves no layer to align below the final one of the "
                f"{space.num_layers} layers" + ("" if cfg.align_every <= space.num_layers else
                                                f" (--align-every {cfg.align_every} exceeds the {space.num_layers} layers)")
            )
        if cfg.align_lambda_schedule == "linear-decay":
            if not cfg.max_update:
                raise MagicError("--align-lambda-schedule linear-decay needs --max-update")
        self.space, self.cfg, self.search_state, self.seed = space, cfg, search_state, seed
        self.anchor = Anchor(space, search_state, seed, cfg, scoring_batches) if cfg.align_target == "anchor" else None
        self._probe_batch = probe_batch
        self.epoch, self.update_num = 1, 0
        logger.info(self.describe())

    # ------------------------------------------------------------ what and when
    def describe(self) -> str:
        cfg = self.cfg
        schedule = ("constant" if cfg.align_lambda_schedule == "constant" else
                    f"falling linearly to 0 over the last {cfg.align_decay_fraction:.0%} of {cfg.max_update} updates")
        layers = ", ".join(f"H_{n}" for n in self.layers)
        final = "the final layer too" if cfg.align_final_layer else "not the final layer"
        target = (f"the mean of {cfg.align_avg_children} random children" if self.anchor is None else
                  self.anchor.describe())
        share = "" if cfg.align_batch_fraction == 1 else f" on {100 * cfg.align_batch_fraction:g}% of each batch's sentences"
        return (f"MAGIC-A: lambda {cfg.align_lambda:g} ({schedule}); aligned layers {layers} of {self.space.num_layers} "
                f"({final}){share}; dropout: {cfg.align_dropout}; from epoch {cfg.align_warmup_epochs + 1}, update "
                f"{cfg.align_warmup_updates}; target: {target}")

    @property
    def allowed(self):
        return self.search_state.allowed

    @property
    def active(self) -> bool:
        """Whether the current update adds the alignment term."""
        return self.epoch > self.cfg.align_warmup_epochs and self.update_num >= self.cfg.align_warmup_updates

    @property
    def weight(self) -> float:
        """lambda at the current update."""
        cfg = self.cfg
        if cfg.align_lambda_schedule == "constant":
            return cfg.align_lambda
        span = cfg.align_decay_fraction * cfg.max_update
        return cfg.align_lambda * min(1.0, max(0.0, (cfg.max_update - self.update_num) / span))

    @property
    def uses_training_states(self) -> bool:
        """Whether the criterion's training forward must return every H_n."""
        return self.cfg.align_dropout != "clean"

    @property
    def anchor_arch(self) -> Optional[str]:
        return self.anchor.state.arch if self.anchor is not None else None

    # ------------------------------------------------------------ hooks the strategy calls
    def begin_epoch(self, epoch: int, model) -> None:
        self.epoch = epoch
        if self.anchor is not None:
            self.anchor.begin_epoch(model, epoch)

    def begin_update(self, model, update_num: int) -> None:
        """Before the update's first forward: the first anchor, when alignment starts."""
        self.update_num = update_num
        if not self.active:
            return
        ddp = any(isinstance(m, torch.nn.parallel.DistributedDataParallel) for m in wrappers(model))
        if self.cfg.align_dropout == "clean" and ddp:
            raise MagicError("--align-dropout clean runs a second forward of the child, which torch's "
                             "DistributedDataParallel does not allow: use --ddp-backend legacy_ddp")
        if self.anchor is not None and not self.anchor.chosen:
            self.anchor.choose_first(model, update_num)

    def end_update(self, model, update_num: int, child: Child) -> None:
        """After the weights' step: the anchor's ``best`` policy may replace it."""
        if self.anchor is not None and self.active:
            self.anchor.end_update(model, update_num, child)

    def restrict(self, model, epoch: int) -> None:
        """After progressive shrinking: an anchor outside the shrunk space is chosen again inside it."""
        if self.anchor is not None:
            self.anchor.restrict(model, self.update_num, epoch)

    # ------------------------------------------------------------ the term
    def loss(self, model, src_tokens: torch.Tensor, inner_states: Optional[Sequence[torch.Tensor]]) -> torch.Tensor:
        """sum_n MSE(H_n(child), H_n(target)) over the aligned layers, for the child
        that is running; ``inner_states``: its training forward's H_0..H_N."""
        supernet = unwrap(model)
        rows = self._sentences(src_tokens.size(0), src_tokens.device)
        if rows is not None:
            src_tokens = src_tokens.index_select(0, rows)
        if self.cfg.align_dropout == "clean":
            with train_mode(supernet, training=False):  # dropout off; the graph is kept
                states = supernet.hidden_states(src_tokens, upto=max(self.layers))
            # the target's forward starts from the layers it shares with the child (same weights, no dropout)
            targets = self.targets(supernet, src_tokens, child_states=states)
        else:
            states = [s.index_select(1, rows) for s in inner_states] if rows is not None else inner_states
            targets = self.targets(supernet, src_tokens, dropout=self.cfg.align_dropout == "train-train")
        return masked_mse([states[n] for n in self.layers], targets, self._keep(supernet, src_tokens))

    def _sentences(self, batch: int, device: torch.device) -> Optional[torch.Tensor]:
        """The rows of a batch whose states are aligned under ``--align-batch-fraction`` (None: all):
        a seeded draw per update, the same on every rank and after a resume."""
        count = max(1, math.ceil(self.cfg.align_batch_fraction * batch))
        if count >= batch:
            return None
        rows = rng_for(self.seed, STREAM_ALIGN_SENTENCES, self.update_num).choice(batch, count, replace=False)
        return torch.from_numpy(np.sort(rows)).to(device)

    @torch.inference_mode()
    def targets(self, supernet, src_tokens: torch.Tensor, dropout: bool = False,
                child_states: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
        """Detached H_n (n aligned) of the anchor, or the mean over random children
        (seeded by the update); ``dropout``: computed in train mode.
        ``child_states``: the running child's dropout-free H_0..H_n; a target child
        reuses those of the layers it shares with it, from the first."""
        if self.anchor is not None:
            children = [self.anchor.child]
        else:
            rng = rng_for(self.seed, STREAM_AVERAGE_TARGET, self.update_num)
            children = [uniform_child(self.space, rng, self.allowed) for _ in range(self.cfg.align_avg_children)]
        running, upto = supernet.child, max(self.layers)
        total = None
        with train_mode(supernet, training=dropout):
            for child in children:
                prefix = ()
                if child_states is not None and running is not None:
                    shared = next((n for n in range(upto) if child[n] != running[n]), upto)
                    prefix = [s.detach() for s in child_states[:shared + 1]]
                with supernet.child_context(child):
                    states = supernet.hidden_states(src_tokens, upto=upto, prefix=prefix)
                picked = [states[n] for n in self.layers]
                total = picked if total is None else [t + s for t, s in zip(total, picked)]
        return [t / len(children) for t in total]

    @staticmethod
    def _keep(supernet, src_tokens: torch.Tensor) -> torch.Tensor:
        return src_tokens.ne(supernet.encoder.dictionary.pad()).t().unsqueeze(-1).float()  # (T, B, 1)

    # ------------------------------------------------------------ validation
    @torch.no_grad()
    def validation_metrics(self, model, children: Sequence[Child]) -> Dict[str, float]:
        """On the probe batch: ``align_floor``, the MSE between the target's H_n with and
        without dropout (what dropout alone adds to a train-mode alignment loss), and
        ``align_gap``, the dropout-free MSE of ``children`` to the target."""
        if self.anchor is not None and not self.anchor.chosen:
            return {}
        supernet = unwrap(model)
        device = next(supernet.parameters()).device
        tokens = self._probe_batch()["net_input"]["src_tokens"].to(device)
        keep = self._keep(supernet, tokens)
        clean = self.targets(supernet, tokens)
        floor = masked_mse(self.targets(supernet, tokens, dropout=True), clean, keep)
        gaps = []
        with train_mode(supernet, training=False):
            for child in children:
                with supernet.child_context(child):
                    states = supernet.hidden_states(tokens, upto=max(self.layers))
                gaps.append(float(masked_mse([states[n] for n in self.layers], clean, keep)))
        return {"align_floor": float(floor), "align_gap": float(np.mean(gaps))}
