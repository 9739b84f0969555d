"""How the super-net is trained: one strategy per family of methods, and what
they use. The task (``tasks/magic_masked_lm.py``) builds a strategy and its
hooks delegate to it (``strategy.py`` is the interface):

* ``single_path.py``: one child per update, SPOS, MAGIC-T and FairNAS
  (``samplers.py``), with MAGIC-A (``alignment.py``, its anchor in
  ``anchor.py``), progressive shrinking (``shrinking.py``), training shares
  (``training_share.py``) and interference samples;
* ``gradient_search.py``: DARTS / GDAS / GAEA and TangleNAS's superposition in
  a weight-entangled space (``--relaxation``), with the architecture weights
  theta in ``arch_weights.py``.

``frozen.py`` hides the operators a step did not use from the optimizer.

A strategy is built from (space, config, search state, data) and never imports
the task: ``data`` is any fairseq task, used for its datasets only. What it must
keep across a resume lives in the ``SearchState`` (``models/search_state.py``) or in the
model's state dict.
"""

from ..errors import MagicError
from .gradient_search import RELAXATIONS, RelaxationConfig, RelaxedTraining  # noqa: F401
from .single_path import SampledConfig, SampledTraining  # noqa: F401
from .strategy import StrategyConfig, TrainingStrategy  # noqa: F401


def strategy_class(cfg) -> type:
    """The strategy a task config asks for (and the checks of its options)."""
    if cfg.relaxation not in RELAXATIONS:
        raise MagicError(f"unknown relaxation '{cfg.relaxation}' (choose from {', '.join(RELAXATIONS)})")
    return SampledTraining if cfg.relaxation == "none" else RelaxedTraining
