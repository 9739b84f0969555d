"""``--task magic_electra``: ELECTRA-style pre-training of a found child (its generator: ``modules/generator.py``).

    fairseq-train data-bin --user-dir fairseq_magic --task magic_electra --criterion magic_electra \\
        --arch magic_child --child-arch search/best.json --generator-fraction 0.25 --disc-weight 50 ...

fairseq's masked-LM data and masking (ELECTRA masks every selected token, so
``--leave-unmasked-prob`` and ``--random-token-prob`` default to 0), a
``magic_child`` discriminator as the model, and the generator's options; the
criterion builds the generator from the discriminator's architecture.
"""

from dataclasses import dataclass, field

from fairseq.tasks import register_task
from fairseq.tasks.masked_lm import MaskedLMConfig, MaskedLMTask

from ..errors import MagicError
from ..models.child import MagicChildModel
from ..ranges import check_section


@dataclass
class MagicElectraConfig(MaskedLMConfig):
    leave_unmasked_prob: float = field(default=0.0, metadata={
        "range": "[0, 1]", "help": "probability that a masked token is unmasked"})
    random_token_prob: float = field(default=0.0, metadata={
        "range": "[0, 1]", "help": "probability of replacing a token with a random one"})
    generator_fraction: float = field(default=0.25, metadata={
        "range": "(0, 1]",
        "help": "the generator's hidden and FFN sizes as a fraction of the discriminator's (ELECTRA: 1/4; <= 1)"})
    generator_arch: str = field(default="", metadata={
        "help": "the generator's operators, e.g. MHA4,FFN,MHA4,FFN (default: the discriminator's)"})
    disc_weight: float = field(default=50.0, metadata={
        "range": "(0, inf)", "help": "weight of the discriminator's loss (ELECTRA: 50)"})


@register_task("magic_electra", dataclass=MagicElectraConfig)
class MagicElectraTask(MaskedLMTask):
    cfg: MagicElectraConfig

    def __init__(self, cfg: MagicElectraConfig, dictionary=None):
        check_section(cfg, MagicElectraConfig)
        super().__init__(cfg, dictionary)
        self.discriminator = None  # (space, child, model config) of the model, for the criterion's generator

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if not isinstance(model, MagicChildModel):
            raise MagicError("--task magic_electra trains a magic_child discriminator: use --arch magic_child")
        self.discriminator = (model.space, model.child, model.args)
        return model
