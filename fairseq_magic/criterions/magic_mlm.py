"""The super-net's loss: masked-LM cross entropy of the running child.

It is the one place where further terms (the alignment of MAGIC-A) join the
loss, normalised by the same ``sample_size`` as the MLM term so that their
weight does not change with batch size, ``--update-freq`` or GPU count.
"""

import math
import re
from dataclasses import dataclass

from fairseq.criterions import register_criterion
from fairseq.criterions.masked_lm import MaskedLmConfig, MaskedLmLoss
from fairseq.logging import metrics

_CHILD_LOSS = re.compile(r"^child\d+_loss$")


@dataclass
class MagicMLMConfig(MaskedLmConfig):
    pass


@register_criterion("magic_mlm", dataclass=MagicMLMConfig)
class MagicMLMCriterion(MaskedLmLoss):
    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        MaskedLmLoss.reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        keys = sorted({k for log in logging_outputs for k in log if _CHILD_LOSS.match(k)})
        for key in keys:
            value = sum(log.get(key, 0) for log in logging_outputs)
            metrics.log_scalar(key, value / max(sample_size, 1) / math.log(2), sample_size, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
