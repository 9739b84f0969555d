"""One exception type for bad user input, reported as a single line.

fairseq-train imports this plugin before it builds anything, so the hook below
turns an uncaught :class:`MagicError` into ``fairseq-magic: error: ...`` on
stderr and exit status 1, instead of a traceback.  Library callers still get an
ordinary exception.
"""

import sys


class MagicError(Exception):
    """Bad input: unknown operator, malformed architecture, foreign checkpoint..."""


def _one_line_excepthook(exc_type, exc, tb, _previous=sys.excepthook):
    if issubclass(exc_type, MagicError):
        sys.stderr.write(f"fairseq-magic: error: {exc}\n")
        sys.stderr.flush()
        return
    _previous(exc_type, exc, tb)


def install_excepthook() -> None:
    if sys.excepthook is not _one_line_excepthook:
        sys.excepthook = _one_line_excepthook
