"""Commands that make data: the default corpus, sentencepiece, the topic set, encoding, GLUE folders."""

import os
import sys

from ..errors import MagicError
from ..ranges import ranged
from .options import SEED, progress_bar, output_folder, add_progress_option


def cmd_corpus(args) -> None:
    from ..data import corpus

    counts = corpus.build(output_folder(args.out), corpus=args.corpus, max_mb=args.max_mb, seed=args.seed)
    print(f"corpus: {counts['train']} train / {counts['valid']} valid / {counts['test']} test lines in {args.out}")


def cmd_spm(args) -> None:
    """Train a sentencepiece model on train.txt and encode every split as pieces."""
    from ..data.corpus import encode_file, train_sentencepiece

    train = os.path.join(args.data, "train.txt")
    if not os.path.isfile(train):
        raise MagicError(f"no train.txt in {args.data} (run 'fairseq-magic corpus' first)")
    os.makedirs(output_folder(args.out), exist_ok=True)
    prefix = os.path.join(args.out, "spm")
    sp = train_sentencepiece(train, prefix, args.vocab_size, args.max_sentences)
    for split in ("train", "valid", "test"):
        src = os.path.join(args.data, f"{split}.txt")
        if os.path.isfile(src):
            encode_file(sp, src, os.path.join(args.out, f"{split}.spm"))
    print(f"sentencepiece model {prefix}.model ({sp.get_piece_size()} pieces); encoded splits in {args.out}")


def cmd_topics(args) -> None:
    from ..data.corpus import topic_dataset

    counts = topic_dataset(output_folder(args.out), per_label=args.per_label, seed=args.seed)
    print(f"topic data set (numeric vs stdlib docstrings): {counts['train']} train / {counts['dev']} dev in {args.out}")


def cmd_encode(args) -> None:
    """Encode text files with a sentencepiece model (or fastBPE codes), one output file per input (FILE.spm)."""
    from ..data.corpus import encode_file, text_encoder

    if bool(args.spm) == bool(args.bpe_codes):
        raise MagicError("encode needs one of --spm and --bpe-codes")
    encode = text_encoder(args.spm, args.bpe_codes)
    for path in args.inputs:
        if not os.path.isfile(path):
            raise MagicError(f"input file not found: {path}")
        encode_file(encode, path, path + ".spm")
        print(f"{path} -> {path}.spm")


def cmd_glue_prep(args) -> None:
    """Raw GLUE task folders (or your own, in a GLUE task's layout) -> encoded, binarised folders for
    sentence_prediction, each with a fine-tuning config sized to its rows."""
    from ..data.glue import Schedule, prepare, suggested_lr, write_finetune_config
    from ..models.hub import bpe_model

    found = bpe_model(args.model) if args.model and not (args.spm or args.bpe_codes) else None
    spm_model = args.spm or (found[2] if found and found[0] == "sentencepiece" else "")
    bpe_codes = args.bpe_codes or (found[2] if found and found[0] == "fastbpe" else "")
    dictionary = args.dict or (os.path.join(args.model, "dict.txt") if args.model else "")
    if not (spm_model or bpe_codes) or not dictionary:
        raise MagicError("glue-prep needs --model (an export's directory, with its sentencepiece model or BPE codes) "
                         "or --dict with --spm or --bpe-codes")
    tasks = [t for t in args.tasks.split(",") if t.strip()]
    child = exported_child(args.model) if args.model else None

    def on_task(layouts, result):
        bar.total = len(layouts)
        layout = next(layout for layout in layouts if layout.name == result["task"])
        rows = ", ".join(f"{split} {n:,}" for split, n in result["rows"].items())
        dropped = f"; {result['dropped']} malformed rows dropped" if result["dropped"] else ""
        kind = ("regression" if result["regression"] else
                f"{result['num_classes']} classes, index order {' '.join(result['labels'])}")
        bar.write(f"{result['task']}: {rows} rows ({kind}{dropped}) -> {result['out']}", file=sys.stdout)
        schedule = Schedule(result["rows"]["train"], args.epochs, args.batch_size or layout.batch_size,
                            args.warmup_fraction)
        lr, why = (args.lr, "--lr") if args.lr else suggested_lr(child and child["layer_params"], layout)
        config = write_finetune_config(layout, result["out"], schedule, lr, why,
                                       child["max_positions"] if child else 128,
                                       os.path.join(args.model, "model.pt") if child else "")
        bar.write(f"  fine-tuning: {schedule.options()} --lr {lr:g} ({why}); hydra: {config}", file=sys.stdout)
        bar.update()

    with progress_bar(args, "GLUE tasks", "task") as bar:
        prepare(args.glue_dir, output_folder(args.out), spm_model, dictionary, tasks, on_task=on_task,
                bpe_codes=bpe_codes)


def exported_child(folder: str):
    """Layer parameters and positions of the child exported to ``folder`` (None: not a magic_child export)."""
    from .. import models  # noqa: F401  (registers the architectures)
    from ..search.export import read_source

    path = os.path.join(folder, "model.pt")
    if not os.path.isfile(path):
        raise MagicError(f"no model.pt in --model {folder} (an export's folder)")
    try:
        source = read_source(path, dictionaries=False)
    except MagicError:  # a stock roberta export: the sizes are not recorded as a child's
        return None
    return {"layer_params": source.space.layer_params(source.child), "max_positions": source.max_positions}


def add_commands(sub) -> None:
    """The subcommands of this family, each with its options."""
    p = sub.add_parser("corpus", help="build the default corpus (or split your own) into train/valid/test.txt")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--corpus", default="", help="your own plain-text corpus, one paragraph per line")
    p.add_argument("--max-mb", type=ranged(float, "(0, inf)"), default=4.0, help="size of the default corpus in MB")
    p.add_argument("--seed", type=SEED, default=1)
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("spm", help="train sentencepiece on train.txt and encode all splits")
    p.add_argument("--data", required=True, help="directory with train/valid/test.txt")
    p.add_argument("--out", required=True, help="output directory for spm.model and *.spm")
    p.add_argument("--vocab-size", type=ranged(int, "[1, inf)"), default=8000)
    p.add_argument("--max-sentences", type=ranged(int, "[1, inf)"), default=200000,
                   help="sentences sampled to train the model")
    p.set_defaults(func=cmd_spm)

    p = sub.add_parser("topics", help="build a labelled sentence data set (GLUE layout) from installed packages")
    p.add_argument("--out", required=True, help="output directory for train/dev .input0 and .label")
    p.add_argument("--per-label", type=ranged(int, "[1, inf)"), default=1500)
    p.add_argument("--seed", type=SEED, default=1)
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("encode", help="encode text files with a sentencepiece model or fastBPE codes (writes FILE.spm)")
    p.add_argument("--spm", default="", help="sentencepiece model")
    p.add_argument("--bpe-codes", default="", help="fastBPE codes (XLM-style subwords), instead of --spm")
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser(
        "glue-prep", help="encode and binarise raw GLUE task folders for fine-tuning (sentence_prediction)",
        description="The counterpart of fairseq's preprocess_GLUE_tasks.sh: each task folder of --glue-dir "
        "(CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI, as GLUE's download script lays them out) is split "
        "into input0/input1/label, encoded with the pre-training sentencepiece model and binarised with the "
        "pre-training dict.txt into OUT/<TASK>-bin, the data directory of the README's fine-tuning command.",
    )
    p.add_argument("--glue-dir", required=True, help="folder holding the task folders (RTE/train.tsv, ...)")
    p.add_argument("--out", required=True, help="output folder; each task goes to OUT/<TASK>-bin")
    p.add_argument("--model", default="", help="an export's directory: its sentencepiece.bpe.model and dict.txt")
    p.add_argument("--spm", default="", help="the pre-training sentencepiece model (instead of --model)")
    p.add_argument("--dict", default="", help="the pre-training dict.txt (instead of --model)")
    p.add_argument("--bpe-codes", default="", help="the pre-training fastBPE codes (instead of --spm)")
    p.add_argument("--tasks", default="",
                   help="comma-separated task names (default: every GLUE task folder found); your own data as "
                        "FOLDER:TASK, a folder of --glue-dir laid out as that GLUE task (e.g. reviews:SST-2)")
    p.add_argument("--epochs", type=ranged(int, "[1, inf)"), default=10,
                   help="fine-tuning epochs: the updates and warm-up written to each folder's finetune.yaml")
    p.add_argument("--batch-size", type=ranged(int, "[1, inf)"), default=None,
                   help="fine-tuning batch (default: fairseq's for the task, 16 or 32)")
    p.add_argument("--warmup-fraction", type=ranged(float, "[0, 1]"), default=0.06,
                   help="warm-up as a fraction of the updates (RoBERTa: 0.06)")
    p.add_argument("--lr", type=ranged(float, "(0, inf)"), default=None,
                   help="fine-tuning learning rate (default: by the --model child's layer parameters)")
    add_progress_option(p)
    p.set_defaults(func=cmd_glue_prep)
