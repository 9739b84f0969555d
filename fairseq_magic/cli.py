"""``fairseq-magic``: the plugin's command line, one subcommand per job.

    fairseq-magic corpus --out data/corpus            # embedded default corpus
    fairseq-magic spm --data data/corpus --out data/spm --vocab-size 8000
    fairseq-magic space --arch magic_supernet_analysis  # sizes of a space's operators
    fairseq-magic export --checkpoint supernet.pt --arch found.json --out child/model.pt

Training itself is plain ``fairseq-train --user-dir fairseq_magic ...``.
"""

import argparse
import logging
import os
import sys

from .errors import MagicError

logger = logging.getLogger("fairseq_magic.cli")


def cmd_corpus(args) -> None:
    from . import corpus

    counts = corpus.build(args.out, corpus=args.corpus, max_mb=args.max_mb, seed=args.seed)
    print(f"corpus: {counts['train']} train / {counts['valid']} valid / {counts['test']} test lines in {args.out}")


def cmd_spm(args) -> None:
    """Train a sentencepiece model on train.txt and encode every split as pieces."""
    import sentencepiece as spm

    train = os.path.join(args.data, "train.txt")
    if not os.path.isfile(train):
        raise MagicError(f"no train.txt in {args.data} (run 'fairseq-magic corpus' first)")
    os.makedirs(args.out, exist_ok=True)
    prefix = os.path.join(args.out, "spm")
    try:
        spm.SentencePieceTrainer.train(
            input=train, model_prefix=prefix, vocab_size=args.vocab_size, model_type="unigram",
            character_coverage=1.0, input_sentence_size=args.max_sentences, shuffle_input_sentence=True,
            hard_vocab_limit=False,  # a small corpus gets the vocabulary it supports
            bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, num_threads=os.cpu_count() or 1, minloglevel=2,
        )
    except RuntimeError as err:
        raise MagicError(f"sentencepiece training failed: {str(err).strip().splitlines()[-1]}") from None
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    for split in ("train", "valid", "test"):
        src = os.path.join(args.data, f"{split}.txt")
        if not os.path.isfile(src):
            continue
        with open(src, encoding="utf-8") as fin, open(os.path.join(args.out, f"{split}.spm"), "w", encoding="utf-8") as fout:
            for line in fin:
                fout.write(" ".join(sp.encode(line.strip(), out_type=str)) + "\n")
    print(f"sentencepiece model {prefix}.model ({sp.get_piece_size()} pieces); encoded splits in {args.out}")


def cmd_space(args) -> None:
    """Print a named architecture's space: operators, parameters, FLOPs, size."""
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY

    from . import models  # noqa: F401  (registers the architectures)
    from .models.supernet import space_from_args

    if args.arch not in ARCH_CONFIG_REGISTRY or not args.arch.startswith("magic_supernet"):
        raise MagicError(f"unknown super-net architecture '{args.arch}'")
    ns = Namespace()
    if args.arch != "magic_supernet":
        ARCH_CONFIG_REGISTRY[args.arch](ns)
    else:
        from .models.supernet import magic_supernet_base

        magic_supernet_base(ns)
    space = space_from_args(ns)
    print(f"{args.arch}: {space.describe()}")
    print(f"{'operator':<10}{'parameters':>14}{'FLOPs@' + str(args.seq_len):>16}")
    for op in space.candidates:
        print(f"{op.name:<10}{space.operator_params(op):>14,}{space.operator_flops(op, args.seq_len):>16,}")


def cmd_export(args) -> None:
    """Write a child of a super-net checkpoint as a stand-alone magic_child checkpoint."""
    from . import models  # noqa: F401  (registers the architectures)
    from .export import export_child

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    result = export_child(args.checkpoint, args.arch, args.out)
    logger.info(f"exported {result['arch']} ({result['params']:,} parameters) to {result['out']}")
    print(result["out"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairseq-magic", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("corpus", help="build the default corpus (or split your own) into train/valid/test.txt")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--corpus", default="", help="your own plain-text corpus, one paragraph per line")
    p.add_argument("--max-mb", type=float, default=4.0, help="size of the default corpus in MB")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("spm", help="train sentencepiece on train.txt and encode all splits")
    p.add_argument("--data", required=True, help="directory with train/valid/test.txt")
    p.add_argument("--out", required=True, help="output directory for spm.model and *.spm")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--max-sentences", type=int, default=200000, help="sentences sampled to train the model")
    p.set_defaults(func=cmd_spm)

    p = sub.add_parser(
        "export", help="write a child of a trained super-net as a stand-alone magic_child checkpoint",
        description="Write a child of a trained super-net as a stand-alone magic_child checkpoint that "
        "inherits the super-net's weights, for fairseq-train --restore-file, sentence_prediction and from_pretrained.",
    )
    p.add_argument("--checkpoint", required=True, help="super-net checkpoint (e.g. checkpoints/spos/checkpoint_best.pt)")
    p.add_argument("--arch", required=True, help="the child: an architecture string or a JSON architecture file")
    p.add_argument("--out", required=True, help="where to write the child's checkpoint")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("space", help="print the operators of a named super-net architecture with their sizes")
    p.add_argument("--arch", default="magic_supernet")
    p.add_argument("--seq-len", type=int, default=128)
    p.set_defaults(func=cmd_space)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S", level=logging.INFO, stream=sys.stdout,
    )
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MagicError as err:
        print(f"fairseq-magic: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
