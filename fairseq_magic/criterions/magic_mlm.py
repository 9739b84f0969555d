"""The super-net's loss: masked-LM cross entropy of the running child, plus,
under MAGIC-A, the alignment term that ``alignment.py`` computes (Eq. 1-2):

    L = L_mlm + lambda_t * sum_n MSE(H_n(anchor), H_n(child))

Each MSE is a mean over the non-padding tokens and channels of the batch.
fairseq divides the summed loss by ``sample_size`` (masked tokens, summed over
micro-batches and GPUs), so the term enters the summed loss as
``lambda * MSE * sample_size``: its weight relative to the per-token MLM loss
stays lambda whatever the batch size, ``--update-freq`` or number of GPUs.
"""

import math
import re

from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.masked_lm import MaskedLmConfig, MaskedLmLoss
from fairseq.logging import metrics

from ..mlm_loss import masked_lm_loss

_CHILD_LOSS = re.compile(r"^(child\d+|mixture)_loss$")


@register_criterion("magic_mlm", dataclass=MaskedLmConfig)
class MagicMLMCriterion(MaskedLmLoss):
    def forward(self, model, sample, reduce=True):
        alignment = getattr(self.task, "alignment", None)  # MAGIC-A (alignment.py), when it is on
        align = model.training and alignment is not None and alignment.active
        out = masked_lm_loss(model, sample, self.padding_idx, tpu=self.tpu,
                             return_all_hiddens=align and alignment.uses_training_states)
        loss, sample_size = out.loss, out.sample_size
        logging_output = {"ntokens": sample["ntokens"], "nsentences": sample["nsentences"], "sample_size": sample_size}
        if align:
            tokens = sample["net_input"]["src_tokens"]
            align_loss = alignment.loss(model, tokens, out.extra.get("inner_states")) * sample_size
            logging_output["align_loss"] = align_loss.data
            logging_output["mlm_loss"] = loss.data
            loss = loss + alignment.weight * align_loss
        logging_output["loss"] = loss if self.tpu else loss.data
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        # ppl is the masked-LM loss's, not the total's: registered before fairseq's own (the first one counts)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(
            (meters["mlm_loss"] if "mlm_loss" in meters else meters["loss"]).avg))
        MaskedLmLoss.reduce_metrics(logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        for key in ("mlm_loss", "align_loss"):
            if any(key in log for log in logging_outputs):
                value = sum(log.get(key, 0) for log in logging_outputs)
                # mlm_loss in bits per token, as fairseq's loss; align_loss is the mean MSE
                scale = math.log(2) if key == "mlm_loss" else 1.0
                metrics.log_scalar(key, value / max(sample_size, 1) / scale, sample_size, round=4)
        keys = sorted({k for log in logging_outputs for k in log if _CHILD_LOSS.match(k)})
        for key in keys:
            value = sum(log.get(key, 0) for log in logging_outputs)
            metrics.log_scalar(key, value / max(sample_size, 1) / math.log(2), sample_size, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
