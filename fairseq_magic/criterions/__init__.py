from .magic_mlm import MagicMLMCriterion  # noqa: F401
from .distillation import MaskedLMDistillation, SentencePredictionDistillation  # noqa: F401
