"""One exception type for bad user input, reported as a single line.

fairseq-train imports this plugin before it builds anything, so the hook below
turns an uncaught :class:`MagicError` into ``fairseq-magic: error: ...`` on
stderr and exit status 1, instead of a traceback; so does a collective that
failed because a peer rank went away (a killed or crashed process), which
torch reports as a long chain of gloo/NCCL tracebacks.  Library callers still
get an ordinary exception.
"""

import re
import sys


MAX_MESSAGE = 2000  # characters: a message quoting a huge input line stays readable


def one_line(text: str) -> str:
    """``text`` as one printable line: line breaks and other control characters
    escaped (a message may quote the user's input), cut at MAX_MESSAGE characters."""
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


class MagicError(Exception):
    """Bad input: unknown operator, malformed architecture, foreign checkpoint... Its
    message is one line whatever input it quotes."""

    def __init__(self, message="", *args):
        super().__init__(one_line(message), *args)


_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def _peer_gone(exc: BaseException) -> bool:
    """A failed collective: torch's DistBackendError, or the RuntimeError gloo raises when a peer's socket closes."""
    return type(exc).__name__ == "DistBackendError" or (
        isinstance(exc, RuntimeError) and any(text in str(exc) for text in _PEER_GONE))


def _one_line_excepthook(exc_type, exc, tb, _previous=sys.excepthook):
    if issubclass(exc_type, MagicError):
        message = str(exc)
    elif _peer_gone(exc):
        first = (str(exc).strip().splitlines() or [exc_type.__name__])[0]
        first = re.sub(r"^\[[^\]]*\.cc:\d+\]\s*", "", first).split(". ")[0]  # gloo's source location and advice
        message = f"distributed training failed, a peer rank has stopped ({first.strip()})"
    else:
        _previous(exc_type, exc, tb)
        return
    sys.stderr.write(f"fairseq-magic: error: {message}\n")
    sys.stderr.flush()


def install_excepthook() -> None:
    if sys.excepthook is not _one_line_excepthook:
        sys.excepthook = _one_line_excepthook
