"""fairseq-magic: weight-sharing NAS for BERT/RoBERTa encoders, as a fairseq plugin.

    fairseq-train --user-dir fairseq_magic --task magic_masked_lm \\
        --criterion magic_mlm --arch magic_supernet_tiny ...

fairseq imports ``models/`` and ``tasks/`` of a user dir itself; everything is
imported here with relative imports so that nothing registers twice.
"""

from .errors import MagicError, install_excepthook
from .space import SearchSpace, SpaceError, load_child, save_child

install_excepthook()

try:  # the plain-data parts (space, samplers) work without fairseq
    import fairseq  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    from . import fairseq_patches

    fairseq_patches.install()  # every change to fairseq's behaviour: see fairseq_patches.py
    from . import criterions, models, tasks  # noqa: F401,E402

__version__ = "0.1.0"
__all__ = ["MagicError", "SearchSpace", "SpaceError", "load_child", "save_child", "__version__"]
