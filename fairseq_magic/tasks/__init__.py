from .magic_masked_lm import MagicMaskedLMTask  # noqa: F401
