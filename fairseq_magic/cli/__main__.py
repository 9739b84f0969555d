"""``python -m fairseq_magic.cli``: the same as ``fairseq-magic``."""

import sys

from . import main

sys.exit(main())
