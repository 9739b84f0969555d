from .magic_electra import MagicElectraTask  # noqa: F401
from .magic_masked_lm import MagicMaskedLMTask  # noqa: F401
