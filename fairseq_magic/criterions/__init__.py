from .magic_mlm import MagicMLMCriterion  # noqa: F401
