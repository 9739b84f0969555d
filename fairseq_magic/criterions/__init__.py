from .distillation import MaskedLMDistillation, SentencePredictionDistillation  # noqa: F401
from .magic_electra import MagicElectraCriterion  # noqa: F401
from .magic_mlm import MagicMLMCriterion  # noqa: F401
