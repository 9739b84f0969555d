"""What the commands share: output paths, progress bars, one-line usage errors, the options of
checkpoints and of scoring."""

import argparse
import contextlib
import logging
import os
import sys

from ..errors import MagicError
from ..ranges import ranged

logger = logging.getLogger("fairseq_magic.cli")
SEED = ranged(int, "[0, 4294967295]")  # what numpy's generators take


@contextlib.contextmanager
def progress_bar(args, desc: str, unit: str, total=None):
    """A tqdm bar with its total and ETA on a terminal (none with --no-progress-bar, or when stderr
    is a file or a pipe, where every redraw would be a line); log lines go above it."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with tqdm(desc=desc, unit=unit, total=total, disable=args.no_progress_bar or None) as bar, logging_redirect_tqdm():
        yield bar


def output_folder(path: str, option: str = "--out") -> str:
    """``path`` for a command that writes a folder there: one line if it is a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise MagicError(f"{option} {path} is a file; this command writes a folder there")
    return path


def writable_folder(path: str, option: str = "--out") -> str:
    """``output_folder``, checked writable (a file tried in it, or in the nearest folder above it that exists)
    before the work whose results go there."""
    import tempfile

    output_folder(path, option)
    existing = os.path.abspath(path)
    while not os.path.isdir(existing):  # the folder itself is made by the command, once it has its results
        existing = os.path.dirname(existing)
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as err:
        raise MagicError(f"{option} {path}: cannot write there ({err.strerror or err})") from None
    return path


def output_file(path: str, option: str = "--out") -> str:
    """``path`` for a command that writes a file there: one line if it is a folder."""
    if os.path.isdir(path):
        raise MagicError(f"{option} {path} is a folder; this command writes a file there")
    return path


def layer_list(text: str, option: str = "--layers") -> list:
    """Comma-separated layer numbers (0-based)."""
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        layers = []
    if not layers or min(layers) < 0:
        raise MagicError(f"{option} must list layer numbers (0-based), comma-separated, e.g. 0,3; got '{text}'")
    return layers


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one line like every other error of the command."""

    def error(self, message):
        sys.stderr.write(f"fairseq-magic: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def add_progress_option(p) -> None:
    p.add_argument("--no-progress-bar", action="store_true", help="no progress bar (log lines only)")


def add_unsafe_option(p) -> None:
    p.add_argument("--unsafe-load-checkpoint", action="store_true",
                   help="unpickle checkpoints fully, which can run code from them: only for files you trust")


def add_checkpoint_option(p, help: str) -> None:
    p.add_argument("--checkpoint", required=True, help=help)
    add_unsafe_option(p)


def add_scoring_options(p, sentences: int = 512, batch_size: int = 32) -> None:
    """Where children are scored: the options of load_supernet_for_scoring."""
    p.add_argument("--data", default="", help="data-bin directory (default: the one the super-net was trained on)")
    p.add_argument("--subset", default="valid", help="data split to score on")
    p.add_argument("--sentences", type=ranged(int, "[1, inf)"), default=sentences,
                   help="validation sentences (blocks) used")
    p.add_argument("--batch-size", type=ranged(int, "[1, inf)"), default=batch_size)
    p.add_argument("--cpu", action="store_true", help="score on the CPU even when a GPU is there")
    p.add_argument("--fp16", action="store_true", help="score in half precision (GPU)")


def load_supernet_for_scoring(args, checkpoint: str):
    """(model, task, space, batches) of ``checkpoint`` as the options of add_scoring_options say."""
    from ..search.scoring import load_for_scoring

    return load_for_scoring(checkpoint, args.data, args.subset, args.sentences, args.batch_size,
                            cpu=args.cpu, fp16=args.fp16)


def supernet_labels(labels: str, checkpoints) -> list:
    """Names for the compared super-nets: --labels, or each checkpoint's directory."""
    names = labels.split(",") if labels else [os.path.basename(os.path.dirname(os.path.abspath(c))) or c for c in checkpoints]
    if len(names) != len(checkpoints):
        raise MagicError(f"--labels names {len(names)} super-nets, {len(checkpoints)} were given")
    return names
