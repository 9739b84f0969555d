"""``fairseq-magic``: the plugin's command line, one subcommand per job.

    fairseq-magic corpus --out data/corpus            # embedded default corpus
    fairseq-magic spm --data data/corpus --out data/spm --vocab-size 8000
    fairseq-magic space --arch magic_supernet_analysis  # sizes of a space's operators
    fairseq-magic search --checkpoint supernet.pt --out search/ --max-params 60e6
    fairseq-magic export --checkpoint supernet.pt --arch search/best.json --out child/model.pt
    fairseq-magic topics --out data/topics               # labelled sentences for fine-tuning
    fairseq-magic encode --spm data/spm/spm.model data/topics/train.input0
    fairseq-magic glue-prep --glue-dir glue_data --model child/ --out glue-bin  # GLUE for fine-tuning

Training itself is plain ``fairseq-train --user-dir fairseq_magic ...``. As in
fairseq_cli, each family of commands is a module that owns its parsers:
``data`` (corpus, spm, topics, encode, glue-prep), ``search`` (search,
few-shot), ``rank`` (rank sample/train/correlate, interference) and ``export``
(export, derive, size, space); ``options`` holds what they share.
"""

import argparse
import logging
import sys

from ..errors import MagicError
from . import data, export, rank, search
from .options import Parser, logger

FAMILIES = (data, search, rank, export)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fairseq-magic", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.add_commands(sub)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S", level=logging.INFO, stream=sys.stdout,
        force=True,  # fairseq's modules call logging.basicConfig as they are imported (one at DEBUG level)
    )
    args = build_parser().parse_args(argv)
    if getattr(args, "unsafe_load_checkpoint", False):
        from ..checkpoint import allow_unsafe_loading

        logger.warning("--unsafe-load-checkpoint: checkpoints are unpickled fully and can run code")
        allow_unsafe_loading()
    try:
        args.func(args)
    except MagicError as err:
        print(f"fairseq-magic: error: {err}", file=sys.stderr)
        return 1
    return 0
