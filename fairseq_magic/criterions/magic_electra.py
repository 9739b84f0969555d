"""``--criterion magic_electra``: replaced token detection (its generator: ``modules/generator.py``).

Per batch: the generator predicts the masked tokens (its masked-LM loss), the
masked positions are filled with tokens sampled from it, and the discriminator
labels every token of the corrupted sentence as replaced or original (binary
cross entropy, a mean over the tokens). fairseq divides the summed loss by
``sample_size``, the masked tokens, so the total is

    generator MLM loss per masked token + disc_weight * discriminator loss per token.

Logs ``gen_loss`` (bits per masked token), ``disc_loss`` (nats per token), the
discriminator's accuracy on replaced and on original tokens
(``disc_acc_replaced``, ``disc_acc_original``) and the share of tokens replaced.
"""

import logging
import math
from dataclasses import dataclass

import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from ..errors import MagicError
from ..modules import embedded
from ..modules.generator import Generator, TokenDetectionHead, corrupt, describe, generator_space, restore_original
from .magic_mlm import cross_entropy

logger = logging.getLogger("fairseq_magic.criterions.magic_electra")
COUNTS = ("replaced", "replaced_correct", "original", "original_correct", "disc_tokens")


@dataclass
class MagicElectraCriterionConfig(FairseqDataclass):
    pass


@register_criterion("magic_electra", dataclass=MagicElectraCriterionConfig)
class MagicElectraCriterion(FairseqCriterion):
    def __init__(self, cfg: MagicElectraCriterionConfig, task):
        super().__init__(task)
        if getattr(task, "discriminator", None) is None:
            raise MagicError("--criterion magic_electra goes with --task magic_electra")
        space, child, model_cfg = task.discriminator
        gen_space, gen_child = generator_space(space, child, task.cfg.generator_fraction, task.cfg.generator_arch)
        vocab = len(task.source_dictionary)
        self.generator = Generator(gen_space, gen_child, space.hidden_dim, space.embed_dim, vocab, model_cfg)
        self.head = TokenDetectionHead(space.hidden_dim, model_cfg.activation_fn)
        self.disc_weight = task.cfg.disc_weight
        logger.info(f"ELECTRA: discriminator {describe(space, child)}, generator {describe(gen_space, gen_child)}")

    def forward(self, model, sample, reduce=True):
        tokens, target = sample["net_input"]["src_tokens"], sample["target"]
        original, masked = restore_original(tokens, target, self.padding_idx)
        n_masked = masked.sum()
        sentence_encoder = model.encoder.sentence_encoder
        x, padding_mask = embedded(sentence_encoder, tokens)  # the embeddings both share
        gen_logits = self.generator(x, padding_mask, masked, sentence_encoder.embed_tokens.weight)
        gen_loss = cross_entropy(gen_logits, target[masked], self.padding_idx)

        corrupted = corrupt(original, masked, gen_logits)
        features = model(corrupted, features_only=True)[0]  # (B, T, C)
        real = corrupted.ne(self.padding_idx)
        disc_logits = self.head(features[real]).float()
        replaced = corrupted.ne(original)[real]
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits, replaced.float(), reduction="sum")
        n_tokens = real.sum()
        loss = gen_loss + self.disc_weight * disc_loss / n_tokens * n_masked

        said_replaced = disc_logits > 0
        logging_output = {
            "loss": loss.data, "gen_loss": gen_loss.data, "disc_loss": disc_loss.data,
            "ntokens": sample["ntokens"], "nsentences": sample["nsentences"], "sample_size": n_masked,
            "disc_tokens": n_tokens, "replaced": replaced.sum(), "replaced_correct": (said_replaced & replaced).sum(),
            "original": (~replaced).sum(), "original_correct": (~said_replaced & ~replaced).sum(),
        }
        return loss, n_masked, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        total = {key: sum(float(log.get(key, 0)) for log in logging_outputs)
                 for key in ("loss", "gen_loss", "disc_loss", "sample_size") + COUNTS}
        masked = max(total["sample_size"], 1)
        metrics.log_scalar("loss", total["loss"] / masked / math.log(2), masked, round=3)
        metrics.log_scalar("gen_loss", total["gen_loss"] / masked / math.log(2), masked, round=3)
        metrics.log_scalar("disc_loss", total["disc_loss"] / max(total["disc_tokens"], 1), total["disc_tokens"], round=4)
        for kind in ("replaced", "original"):
            if total[kind]:
                metrics.log_scalar(f"disc_acc_{kind}", 100 * total[f"{kind}_correct"] / total[kind], total[kind], round=1)
        metrics.log_scalar("replaced_pct", 100 * total["replaced"] / max(total["disc_tokens"], 1), total["disc_tokens"],
                           round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
