"""How the super-net is trained, one strategy per family of methods. The task
(``tasks/magic_masked_lm.py``) builds one and its hooks delegate to it:

* ``sampled.py``: SPOS and MAGIC-T, one child per update (``--sampler``), with
  MAGIC-A (``alignment.py``), progressive shrinking and interference samples;
* ``relaxed.py``: gradient-based search, DARTS / GDAS / GAEA, and TangleNAS's
  superposition in a weight-entangled space (``--relaxation``).

A strategy is built from (space, config, search state, data) and never imports
the task: ``data`` is any fairseq task, used for its datasets only. What it must
keep across a resume lives in the ``SearchState`` (search_state.py) or in the
model's state dict.
"""

from ..errors import MagicError
from .base import StrategyConfig, TrainingStrategy  # noqa: F401
from .relaxed import RELAXATIONS, RelaxationConfig, RelaxedTraining  # noqa: F401
from .sampled import SampledConfig, SampledTraining  # noqa: F401


def strategy_class(cfg) -> type:
    """The strategy a task config asks for (and the checks of its options)."""
    if cfg.relaxation not in RELAXATIONS:
        raise MagicError(f"unknown relaxation '{cfg.relaxation}' (choose from {', '.join(RELAXATIONS)})")
    return SampledTraining if cfg.relaxation == "none" else RelaxedTraining
