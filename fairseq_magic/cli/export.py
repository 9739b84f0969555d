"""Commands about one child: export it as a model, derive it from architecture weights, its size; a
space's operators."""

import os

from ..errors import MagicError
from ..ranges import ranged
from .options import logger, output_folder, output_file, add_unsafe_option, add_checkpoint_option


def cmd_export(args) -> None:
    """Write a child (of a super-net, or a child checkpoint) as a self-contained model folder."""
    from .. import models  # noqa: F401  (registers the architectures)
    from ..search.export import export_child

    if args.format == "huggingface":
        output_folder(args.out)
    else:
        output_file(args.out)
    result = export_child(args.checkpoint, args.arch, args.out, args.sentencepiece_model, args.format, args.bpe_codes)
    parts = ", ".join(f"{name} {params:,}" for name, params, _ in result["size"])
    logger.info(f"exported {result['arch']} ({result['params']:,} parameters: {parts}) to {result['out']}")
    print(result["out"])


def cmd_derive(args) -> None:
    """The argmax child of a gradient-based search, as an architecture file."""
    from ..checkpoint import load_supernet_checkpoint
    from ..models.state_format import arch_weights_state
    from ..space import save_child
    from ..training.arch_weights import entropy_of, theta_from_state

    output_file(args.out)
    state, _, space = load_supernet_checkpoint(args.checkpoint)
    arch = arch_weights_state(state["model"])
    if not arch:
        raise MagicError(f"{args.checkpoint} has no architecture weights (train with --relaxation mixture or gdas)")
    theta = theta_from_state(arch)
    child = tuple(int(c) for c in theta.argmax(dim=-1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_child(args.out, space, child, theta=[[round(float(t), 6) for t in row] for row in theta],
               entropy=entropy_of(theta), checkpoint=os.path.abspath(args.checkpoint),
               updates=state["optimizer_history"][-1].get("num_updates"))
    names = space.candidate_names
    print(f"{'layer':>5}  " + "  ".join(f"{n:>7}" for n in names))
    for layer, row in enumerate(theta.tolist()):
        print(f"{layer:>5}  " + "  ".join(f"{t:>7.4f}" for t in row))
    print(f"mean entropy {entropy_of(theta):.4f} nats; argmax child {space.format(child)} -> {args.out}")


def cmd_size(args) -> None:
    """A child's parameters and FLOPs, part by part."""
    from .. import models  # noqa: F401  (registers the architectures)
    from ..search.export import read_source

    source = read_source(args.checkpoint, args.arch, dictionaries=False)
    rows = source.size(args.seq_len)
    space = source.space
    print(f"{space.format(source.child)}: hidden {space.hidden_dim}, vocabulary {source.vocab_size:,}, "
          f"{source.max_positions} positions")
    print(f"{'part':<34}{'parameters':>14}{'FLOPs@' + str(args.seq_len):>16}")
    for name, params, flops in rows:
        print(f"{name:<34}{params:>14,}{flops:>16,}")
    print(f"{'total (output matrix = token table)':<34}{sum(r[1] for r in rows):>14,}{sum(r[2] for r in rows):>16,}")


def cmd_space(args) -> None:
    """Print a named architecture's space: operators, parameters, FLOPs, size."""
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY

    from .. import models  # noqa: F401  (registers the architectures)
    from ..models.state_format import supernet_space

    if args.arch not in ARCH_CONFIG_REGISTRY or not args.arch.startswith("magic_supernet"):
        raise MagicError(f"unknown super-net architecture '{args.arch}'")
    ns = Namespace()
    if args.arch != "magic_supernet":
        ARCH_CONFIG_REGISTRY[args.arch](ns)
    else:
        from ..models.supernet import magic_supernet_base

        magic_supernet_base(ns)
    space = supernet_space(ns)
    print(f"{args.arch}: {space.describe()}")
    print(f"{'operator':<10}{'parameters':>14}{'FLOPs@' + str(args.seq_len):>16}")
    for op in space.candidates:
        print(f"{op.name:<10}{space.operator_params(op):>14,}{space.operator_flops(op, args.seq_len):>16,}")


def add_commands(sub) -> None:
    """The subcommands of this family, each with its options."""
    p = sub.add_parser(
        "export", help="write a child of a trained super-net (or a fine-tuned child) as a self-contained model",
        description="Write a child of a trained super-net as a stand-alone magic_child checkpoint that "
        "inherits the super-net's weights, for fairseq-train --restore-file, sentence_prediction and from_pretrained; "
        "or re-package a child checkpoint (retrained, fine-tuned) with its dictionaries. --format roberta and "
        "huggingface take plain-Transformer children. Every export writes README.md, a model card.",
    )
    add_checkpoint_option(p, "super-net checkpoint (e.g. checkpoints/spos/checkpoint_best.pt), or a magic_child "
                             "checkpoint (an export, a retrained or fine-tuned child)")
    p.add_argument("--arch", default="", help="the child of a super-net: an architecture string or a JSON "
                                              "architecture file such as a search's best.json")
    p.add_argument("--out", required=True, help="the checkpoint file to write (dictionaries and the model card go "
                                                "beside it); --format huggingface: a folder")
    p.add_argument("--sentencepiece-model", default="",
                   help="the pre-training sentencepiece model, copied beside the checkpoint so that "
                        "from_pretrained(dir) needs nothing else (default: one beside a child checkpoint)")
    p.add_argument("--bpe-codes", default="",
                   help="the pre-training fastBPE codes instead of a sentencepiece model, copied beside the checkpoint "
                        "as bpecodes (fairseq's --bpe fastbpe); not for --format huggingface")
    p.add_argument("--format", choices=["magic_child", "roberta", "huggingface"], default="magic_child",
                   help="roberta: a stock fairseq RoBERTa checkpoint, loadable without --user-dir; huggingface: a "
                        "transformers RoBERTa folder with its tokenizer (needs the huggingface extra). Both take "
                        "children made of MHA,FFN pairs with one head count and one FFN size")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "derive", help="the argmax child of a gradient-based search (--relaxation) as an architecture file"
    )
    p.add_argument("checkpoint", help="super-net checkpoint trained with --relaxation mixture or gdas")
    p.add_argument("-o", "--out", required=True, help="architecture file to write (JSON; export/search take it)")
    add_unsafe_option(p)
    p.set_defaults(func=cmd_derive)

    p = sub.add_parser("size", help="a child's parameters and FLOPs: embeddings, layers, masked-LM and "
                                    "classification heads (what search limits, export and fairseq count)")
    add_checkpoint_option(p, "a super-net checkpoint (with --arch) or a child checkpoint (export, retrained, fine-tuned)")
    p.add_argument("--arch", default="", help="the child of a super-net: an architecture string or file")
    p.add_argument("--seq-len", type=ranged(int, "[1, inf)"), default=128, help="sequence length for FLOPs")
    p.set_defaults(func=cmd_size)

    p = sub.add_parser("space", help="print the operators of a named super-net architecture with their sizes")
    p.add_argument("--arch", default="magic_supernet")
    p.add_argument("--seq-len", type=ranged(int, "[1, inf)"), default=128)
    p.set_defaults(func=cmd_space)
