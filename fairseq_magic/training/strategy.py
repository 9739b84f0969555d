"""The interface every training strategy implements, and the options they share."""

import json
from dataclasses import dataclass, field
from typing import Callable, Dict

import torch
from fairseq.dataclass import FairseqDataclass

from ..models.search_state import SearchState
from ..space import SearchSpace
from ..streams import rank_and_world

FairseqStep = Callable  # fairseq's own FairseqTask.train_step, bound to the task


@dataclass
class StrategyConfig(FairseqDataclass):
    child_log: str = field(
        default="",
        metadata={"help": "append one JSON line per training forward (update, child, anchor, weight checksum) "
                  "to this file; ranks other than 0 write FILE.rank<r>"},
    )
    score_sentences: int = field(default=256, metadata={"range": "[1, inf)",
                                                        "help": "validation sentences used to score children"})
    score_batch_size: int = field(default=32, metadata={"range": "[1, inf)",
                                                        "help": "batch size when scoring children"})
    score_subset: str = field(default="valid", metadata={"help": "data split used to score children"})


class TrainingStrategy:
    """The hooks the task delegates to. ``alignment`` is MAGIC-A's term for the
    criterion (None when alignment is off)."""

    alignment = None

    def __init__(self, space: SearchSpace, cfg, state: SearchState, data):
        self.space, self.cfg, self.state, self.data = space, cfg, state, data
        self.seed = cfg.seed

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise MagicError for a configuration this strategy cannot train (before anything is built)."""

    def attach(self, supernet, from_checkpoint: bool) -> None:
        """Called once the model is built (before a checkpoint is loaded into it)."""

    def begin_epoch(self, epoch: int, model) -> None:
        pass

    def train_step(self, sample, model, criterion, optimizer, update_num: int, ignore_grad: bool,
                   fairseq_step: FairseqStep):
        raise NotImplementedError

    def inactive_parameters(self, supernet) -> list:
        """The parameters this update's optimizer step must leave untouched: those the
        current child (or mixture) does not compute with."""
        return supernet.inactive_parameters()

    def end_update(self, model, update_num: int) -> None:
        """After the weights' optimizer step."""

    def begin_valid_epoch(self, epoch: int, model) -> None:
        pass

    def valid_step(self, sample, model, criterion):
        raise NotImplementedError

    def write_child_log(self, update_num: int, supernet, record: Dict) -> None:
        """One line of ``--child-log``: ``record`` plus the update, the rank and a
        checksum of the weights (identical weights on every rank give identical sums)."""
        rank = rank_and_world()[0]
        path = self.cfg.child_log if rank == 0 else f"{self.cfg.child_log}.rank{rank}"
        line = {"update": update_num, "rank": rank, **record}
        with torch.no_grad():
            line["weights"] = float(sum(p.double().sum() for p in supernet.parameters()))
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
