"""``fairseq-magic``: the plugin's command line, one subcommand per job.

    fairseq-magic corpus --out data/corpus            # embedded default corpus
    fairseq-magic spm --data data/corpus --out data/spm --vocab-size 8000
    fairseq-magic space --arch magic_supernet_analysis  # sizes of a space's operators
    fairseq-magic search --checkpoint supernet.pt --out search/ --max-params 60e6
    fairseq-magic export --checkpoint supernet.pt --arch search/best.json --out child/model.pt
    fairseq-magic topics --out data/topics               # labelled sentences for fine-tuning
    fairseq-magic encode --spm data/spm/spm.model data/topics/train.input0
    fairseq-magic glue-prep --glue-dir glue_data --model child/ --out glue-bin  # GLUE for fine-tuning

Training itself is plain ``fairseq-train --user-dir fairseq_magic ...``.
"""

import argparse
import contextlib
import logging
import os
import sys

from .errors import MagicError
from .ranges import ranged

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


def cmd_corpus(args) -> None:
    from .data import corpus

    counts = corpus.build(output_folder(args.out), corpus=args.corpus, max_mb=args.max_mb, seed=args.seed)
    print(f"corpus: {counts['train']} train / {counts['valid']} valid / {counts['test']} test lines in {args.out}")


def cmd_spm(args) -> None:
    """Train a sentencepiece model on train.txt and encode every split as pieces."""
    from .data.corpus import encode_file, train_sentencepiece

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
    from .data.corpus import topic_dataset

    counts = topic_dataset(output_folder(args.out), per_label=args.per_label, seed=args.seed)
    print(f"topic data set (numeric vs stdlib docstrings): {counts['train']} train / {counts['dev']} dev in {args.out}")


def cmd_encode(args) -> None:
    """Encode text files with a sentencepiece model (or fastBPE codes), one output file per input (FILE.spm)."""
    from .data.corpus import encode_file, text_encoder

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
    from .data.glue import Schedule, prepare, suggested_lr, write_finetune_config
    from .models.hub import bpe_model

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
    from . import models  # noqa: F401  (registers the architectures)
    from .search.export import read_source

    path = os.path.join(folder, "model.pt")
    if not os.path.isfile(path):
        raise MagicError(f"no model.pt in --model {folder} (an export's folder)")
    try:
        source = read_source(path, dictionaries=False)
    except MagicError:  # a stock roberta export: the sizes are not recorded as a child's
        return None
    return {"layer_params": source.space.layer_params(source.child), "max_positions": source.max_positions}


def cmd_space(args) -> None:
    """Print a named architecture's space: operators, parameters, FLOPs, size."""
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY

    from . import models  # noqa: F401  (registers the architectures)
    from .models.state_format import supernet_space

    if args.arch not in ARCH_CONFIG_REGISTRY or not args.arch.startswith("magic_supernet"):
        raise MagicError(f"unknown super-net architecture '{args.arch}'")
    ns = Namespace()
    if args.arch != "magic_supernet":
        ARCH_CONFIG_REGISTRY[args.arch](ns)
    else:
        from .models.supernet import magic_supernet_base

        magic_supernet_base(ns)
    space = supernet_space(ns)
    print(f"{args.arch}: {space.describe()}")
    print(f"{'operator':<10}{'parameters':>14}{'FLOPs@' + str(args.seq_len):>16}")
    for op in space.candidates:
        print(f"{op.name:<10}{space.operator_params(op):>14,}{space.operator_flops(op, args.seq_len):>16,}")


def cmd_size(args) -> None:
    """A child's parameters and FLOPs, part by part."""
    from . import models  # noqa: F401  (registers the architectures)
    from .search.export import read_source

    source = read_source(args.checkpoint, args.arch, dictionaries=False)
    rows = source.size(args.seq_len)
    space = source.space
    print(f"{space.format(source.child)}: hidden {space.hidden_dim}, vocabulary {source.vocab_size:,}, "
          f"{source.max_positions} positions")
    print(f"{'part':<34}{'parameters':>14}{'FLOPs@' + str(args.seq_len):>16}")
    for name, params, flops in rows:
        print(f"{name:<34}{params:>14,}{flops:>16,}")
    print(f"{'total (output matrix = token table)':<34}{sum(r[1] for r in rows):>14,}{sum(r[2] for r in rows):>16,}")


def cmd_export(args) -> None:
    """Write a child (of a super-net, or a child checkpoint) as a self-contained model folder."""
    from . import models  # noqa: F401  (registers the architectures)
    from .search.export import export_child

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
    from .checkpoint import load_supernet_checkpoint
    from .models.state_format import arch_weights_state
    from .space import save_child
    from .training.arch_weights import entropy_of, theta_from_state

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


def load_supernet_for_scoring(args, checkpoint: str):
    """(model, task, space, batches) of ``checkpoint`` as the options of add_scoring_options say."""
    from .search.scoring import load_for_scoring

    return load_for_scoring(checkpoint, args.data, args.subset, args.sentences, args.batch_size,
                            cpu=args.cpu, fp16=args.fp16)


def cmd_search(args) -> None:
    """Evolution or random search over a trained super-net under size limits."""
    import numpy as np

    from .search.evolution import (
        Constraints, Limits, evolution, plain_transformers, random_search, sub_space, write_results,
    )
    from .search.ensemble import Ensemble
    from .search.rerank import rerank, training_options

    output_folder(args.out)
    rerank_args = training_options(args.rerank_args)  # checked before any scoring
    ensemble = Ensemble(args.checkpoint, lambda path: load_supernet_for_scoring(args, path))
    model, task, space = ensemble.model, ensemble.task, ensemble.space
    allowed = sub_space(space, args.candidate_ops) if args.candidate_ops else None
    limits = Limits(args.min_params, args.max_params, args.min_flops, args.max_flops, args.seq_len)
    constraints = Constraints(space, limits, len(task.source_dictionary), model.args.max_positions, allowed)
    every = None
    if args.plain_transformer:  # few enough to score them all
        every = [c for c in plain_transformers(space, allowed) if constraints.ok(c)]
        if not every:
            raise MagicError("no plain-Transformer child meets the size limits")
        logger.info(f"{len(every)} plain-Transformer children within the limits: scoring them all")
    results = {}
    most = (len(every) if every else args.population * args.generations if args.algorithm == "evolution"
            else args.children)  # an upper bound

    def score(children):
        for child, s in zip(children, ensemble.score(children)):
            results[child] = s
        bar.update(len(children))
        return [results[c].value(args.metric) for c in children]

    def report(gen, scores):
        best = max(scores, key=scores.get)
        logger.info(f"generation {gen + 1}/{args.generations}: {len(scores)} children scored; best: loss "
                    f"{results[best].loss:.4f} accuracy {results[best].accuracy:.4f} {space.format(best)}")

    rng = np.random.default_rng(args.seed)
    with progress_bar(args, "children scored", "child", total=most) as bar:
        if every:
            score(every)
        elif args.algorithm == "evolution":
            evolution(score, constraints, rng, args.population, args.generations, args.parents, args.mutation_prob,
                      report)
        else:
            random_search(score, constraints, rng, args.children)

    best = None
    if args.rerank:  # the top K trained briefly from their inherited weights: the pick is the best after that
        top = sorted(results, key=lambda c: results[c].value(args.metric), reverse=True)[:args.rerank]
        reranked = rerank(ensemble.checkpoints[0], top, [results[c].loss for c in top], args.data, args.out,
                          args.rerank_updates, rerank_args, args.cpu, log=logger.info)
        best = min(reranked, key=lambda r: r.trained_loss).child
    settings = {"checkpoint": os.path.abspath(ensemble.checkpoints[0]),
                **({"ensemble": [os.path.abspath(c) for c in ensemble.checkpoints]} if len(ensemble) > 1 else {}),
                "algorithm": "all plain Transformers" if every else args.algorithm, "seed": args.seed,
                "metric": args.metric, "sentences": args.sentences, "subset": args.subset, "limits": vars(limits),
                "candidate_ops": args.candidate_ops or space.candidate_ops}
    if args.rerank:
        settings["rerank"] = {"updates": args.rerank_updates, "args": args.rerank_args,
                              "children": [{"arch": space.format(r.child), "shared_loss": r.shared_loss,
                                            "trained_loss": r.trained_loss} for r in reranked]}
    print(write_results(results, constraints, args.metric, args.top, settings, args.out, best=best))


def supernet_labels(labels: str, checkpoints) -> list:
    """Names for the compared super-nets: --labels, or each checkpoint's directory."""
    names = labels.split(",") if labels else [os.path.basename(os.path.dirname(os.path.abspath(c))) or c for c in checkpoints]
    if len(names) != len(checkpoints):
        raise MagicError(f"--labels names {len(names)} super-nets, {len(checkpoints)} were given")
    return names


def cmd_interference(args) -> None:
    """Gradient cosine similarity of children on a shared operator (Fig. 2, 8)."""
    from .analysis.interference import measure, write_report

    checkpoints = [args.checkpoint] + ([args.compare] if args.compare else [])
    labels = supernet_labels(args.labels, checkpoints)
    layers = layer_list(args.layers)
    output_folder(args.out)
    results = {}
    total = len(checkpoints) * len(layers) * args.repeats * args.max_m
    with progress_bar(args, "similarity matrices", "matrix", total=total) as bar:
        for label, checkpoint in zip(labels, checkpoints):
            model, _, _, batches = load_supernet_for_scoring(args, checkpoint)
            for layer in layers:
                res = results[(label, layer)] = measure(model, batches, layer, args.max_m, args.repeats, args.seed,
                                                        progress=bar)
                logger.info(f"{label}, o_g in layer {layer}: mean similarity by m: "
                            + ", ".join(f"m={m}: {v:.4f}" for m, v in res.mean_by_m.items()))
    print(write_report(results, args.out))
    print(f"matrices, plots and CSV files in {args.out}")


def cmd_rank_sample(args) -> None:
    from .analysis import rank_correlation
    from .checkpoint import load_supernet_checkpoint

    output_folder(args.out)
    _, _, space = load_supernet_checkpoint(args.checkpoint)
    if args.list:
        from .data.corpus import read_text_lines

        children = [space.parse(line.strip()) for line in read_text_lines(args.list, "--list file") if line.strip()]
        names = rank_correlation.write_children(space, children, args.out)
    else:
        names = rank_correlation.sample_children(space, args.seed, args.children, args.out)
    print(f"{len(names)} children of {space.describe()} written to {args.out}")


def cmd_rank_train(args) -> None:
    import shlex

    from . import jobs
    from .analysis import ground_truth, rank_correlation

    if bool(args.finetune_data) != bool(args.finetune_args):
        raise MagicError("--finetune-data and --finetune-args go together")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise MagicError(f"--seeds must list distinct integers, got '{args.seeds}'")
    launch = jobs.launch_options(args)
    with progress_bar(args, "trainings", "run") as bar:
        truth = ground_truth.train_children(
            args.dir, args.data, shlex.split(args.train_args), args.finetune_data, shlex.split(args.finetune_args),
            seeds=seeds, launch=launch, log=logger.info, progress=bar)
    print(f"ground truth for {len(truth)} children in {os.path.join(args.dir, 'truth.json')}")
    for metric in ("valid_loss", "finetune_accuracy"):
        names = [n for n, r in truth.items() if metric in r]
        if not names:
            continue  # not measured
        note = rank_correlation.format_ceiling(rank_correlation.seed_agreement(truth, names, metric), metric,
                                              truth, names)
        print(note, file=sys.stderr if note.startswith("WARNING") else sys.stdout)


def cmd_rank_correlate(args) -> None:
    """Kendall's tau of each super-net's estimates against stand-alone training (Table 1)."""
    from .analysis import rank_correlation
    from .analysis.ground_truth import read_truth
    from .search.ensemble import Ensemble

    output_folder(args.out)
    space, children = rank_correlation.read_children(args.dir)
    truth = read_truth(args.dir)
    names = [n for n in children if args.ground_truth in truth.get(n, {})]
    if len(names) < len(children):
        logger.info(f"{len(children) - len(names)} children have no {args.ground_truth} yet; correlating {len(names)}")
    labels = supernet_labels(args.labels, args.checkpoints)
    estimates, training = [], []
    with progress_bar(args, f"super-nets scoring {len(names)} children", "net", total=len(args.checkpoints)) as bar:
        for checkpoint in args.checkpoints:  # a super-net, or an ensemble of several joined by '+'
            ensemble = Ensemble(checkpoint, lambda path: load_supernet_for_scoring(args, path))
            if ensemble.space != space:
                raise MagicError(f"{checkpoint} searches another space than the children in {args.dir}")
            estimates.append([-s.loss for s in ensemble.score([children[n] for n in names])])
            training.append(training_figures(ensemble.model.search_state, space, [children[n] for n in names])
                            if len(ensemble) == 1 else None)
            bar.update()
    print(rank_correlation.write_report(truth, names, labels, args.checkpoints, estimates, args.ground_truth, args.out,
                                        training=training))


def training_figures(state, space, children):
    """A super-net's training shares (training/training_share.py) and each child's over-training;
    None when its checkpoint holds no training counts (written before they were kept)."""
    from .training.training_share import TrainingShares

    if not state.visits:
        return None
    shares = TrainingShares(space, state.visits)
    return dict(shares.summary(state.allowed), over_training=[shares.over_training(c) for c in children])


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


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one line like every other error of the command."""

    def error(self, message):
        sys.stderr.write(f"fairseq-magic: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fairseq-magic", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser(
        "search", help="evolutionary or random search of a trained super-net under parameter/FLOPs limits",
        description="Score children of a trained super-net with its shared weights on a fixed validation "
        "slice and search them by evolution (SPOS-style) or at random, under parameter and FLOPs limits. "
        "Writes OUT/search.json (top children with scores, sizes, FLOPs) and OUT/best.json (an architecture file "
        "for 'fairseq-magic export' and '--arch magic_child --child-arch').",
    )
    add_checkpoint_option(p, "trained super-net checkpoint, or an ensemble of several joined by '+' (seeds or "
                             "snapshots; a child scores their mean loss)")
    p.add_argument("--out", required=True, help="output directory")
    add_scoring_options(p)
    p.add_argument("--algorithm", choices=["evolution", "random"], default="evolution")
    p.add_argument("--population", type=ranged(int, "[1, inf)"), default=50)
    p.add_argument("--generations", type=ranged(int, "[1, inf)"), default=20)
    p.add_argument("--parents", type=ranged(int, "[1, inf)"), default=10,
                   help="best children kept as parents each generation")
    p.add_argument("--mutation-prob", type=ranged(float, "[0, 1]"), default=0.1,
                   help="probability to re-draw each layer")
    p.add_argument("--children", type=ranged(int, "[1, inf)"), default=500, help="random search: children to score")
    p.add_argument("--metric", choices=["loss", "accuracy"], default="loss",
                   help="rank by masked-LM loss (lower is better) or accuracy")
    p.add_argument("--max-params", type=ranged(float, "[0, inf]"), default=float("inf"),
                   help="parameters of the whole model, embeddings included")
    p.add_argument("--min-params", type=ranged(float, "[0, inf)"), default=0)
    p.add_argument("--max-flops", type=ranged(float, "[0, inf]"), default=float("inf"),
                   help="forward FLOPs per --seq-len tokens: the layers and the masked-LM head (as the paper counts)")
    p.add_argument("--min-flops", type=ranged(float, "[0, inf)"), default=0)
    p.add_argument("--seq-len", type=ranged(int, "[1, inf)"), default=128, help="sequence length for FLOPs")
    p.add_argument("--candidate-ops", default="",
                   help="search inside a sub-space: these operators only, as training's --candidate-ops writes them "
                        "(MHA4,FFN; or layer groups MHA4|FFN, taken by the layers in turn)")
    p.add_argument("--rerank", type=ranged(int, "[0, inf)"), default=0, metavar="K",
                   help="train the top K children briefly from their inherited weights and pick the one with the "
                        "lowest validation loss after that (0: off; see --rerank-updates, --rerank-args)")
    p.add_argument("--rerank-updates", type=ranged(int, "[1, inf)"), default=200,
                   help="--rerank: updates of each child's brief training")
    p.add_argument("--rerank-args", default="",
                   help="--rerank: more fairseq-train options for the brief trainings (they override the defaults: "
                        "the super-net's tokens per sample and batch size, Adam at lr 1e-4)")
    p.add_argument("--plain-transformer", action="store_true",
                   help="only plain Transformers (MHA, FFN alternating; one head count, one FFN size), the children "
                        "export --format roberta and huggingface take; they are few, so all are scored")
    p.add_argument("--top", type=ranged(int, "[1, inf)"), default=10, help="children listed in the output")
    p.add_argument("--seed", type=SEED, default=1)
    add_progress_option(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("rank", help="rank correlation of super-net estimates with stand-alone training (Table 1)")
    rank_sub = p.add_subparsers(dest="rank_command", required=True)
    q = rank_sub.add_parser("sample", help="M uniform children (or a list) as architecture files")
    add_checkpoint_option(q, "a super-net of the space to sample from")
    q.add_argument("--out", required=True)
    q.add_argument("--children", type=ranged(int, "[1, inf)"), default=60, help="M (paper: 60)")
    q.add_argument("--list", default="", help="a file of architecture strings, one per line, instead of sampling")
    q.add_argument("--seed", type=SEED, default=1)
    q.set_defaults(func=cmd_rank_sample)
    q = rank_sub.add_parser("train", help="train each child from scratch with fairseq-train, one job per (child, seed), "
                                          "here or on Slurm (resumable)")
    q.add_argument("--dir", required=True, help="directory written by 'rank sample'")
    q.add_argument("--data", required=True, help="data-bin directory")
    q.add_argument("--train-args", required=True,
                   help="the budget and settings, as fairseq-train options in one string, e.g. "
                        "\"--max-update 300 --batch-size 16 --optimizer adam --lr 1e-3 --tokens-per-sample 128 --cpu\"")
    q.add_argument("--finetune-data", default="", help="GLUE-format data-bin: also fine-tune each child on it")
    q.add_argument("--finetune-args", default="",
                   help="sentence_prediction settings as one string, e.g. \"--num-classes 2 --max-positions 128 "
                        "--init-token 0 --separator-token 2 --batch-size 16 --lr 1e-3 --max-epoch 3 --cpu\"; the rate depends on "
                        "the children's size: docs/search-export-finetune.md")
    q.add_argument("--seeds", default="1",
                   help="train every child once per seed (comma-separated); the ground truth is the mean, and "
                        "the seeds' agreement is printed as the ceiling of any rank correlation")
    from .jobs import add_launch_options

    add_launch_options(q)
    add_progress_option(q)
    q.set_defaults(func=cmd_rank_train)
    q = rank_sub.add_parser("correlate", help="Kendall's tau and Spearman's rho of super-nets against the ground truth")
    q.add_argument("--dir", required=True, help="directory with children and truth.json")
    q.add_argument("--checkpoints", nargs="+", required=True, help="super-net checkpoints (e.g. SPOS, MAGIC-T, ...); "
                   "A.pt+B.pt is one estimator, the ensemble of A and B (their mean loss)")
    q.add_argument("--labels", default="",
                   help="names of the super-nets, comma-separated; a name given to several checkpoints (seeds of "
                        "one method) gets the mean and standard deviation of tau, and each method is compared "
                        "with the first")
    q.add_argument("--out", required=True, help="where rank.json and the scatter plots go")
    q.add_argument("--ground-truth", choices=["valid_loss", "finetune_accuracy"], default="valid_loss")
    add_progress_option(q)
    add_unsafe_option(q)
    add_scoring_options(q)
    q.set_defaults(func=cmd_rank_correlate)

    p = sub.add_parser(
        "interference", help="gradient cosine similarity of children on a shared operator (Fig. 2, 8)",
        description="On a frozen super-net and one fixed batch: for an operator o_g in layer j, the cosine "
        "similarity of the gradients that C children differing in layers j+1..j+m put on o_g's weights; "
        "averaged over --repeats random o_g and paths. Writes CSV files, heatmaps and a plot against m; "
        "--compare adds a second super-net (e.g. one trained with --align-target average, Fig. 2b).",
    )
    add_checkpoint_option(p, "super-net checkpoint")
    p.add_argument("--compare", default="", help="a second super-net to show side by side")
    p.add_argument("--labels", default="", help="names of the super-nets, comma-separated")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--layers", default="0", help="layers j of o_g (0-based), comma-separated")
    p.add_argument("--max-m", type=ranged(int, "[1, inf)"), default=1,
                   help="children differ in layers j+1..j+m, m = 1..max")
    p.add_argument("--repeats", type=ranged(int, "[1, inf)"), default=10,
                   help="random o_g and paths averaged (paper: 10)")
    p.add_argument("--seed", type=SEED, default=1)
    add_progress_option(p)
    add_scoring_options(p, sentences=64, batch_size=64)
    p.set_defaults(func=cmd_interference)

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
    return parser


def main(argv=None) -> int:
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S", level=logging.INFO, stream=sys.stdout,
        force=True,  # fairseq's modules call logging.basicConfig as they are imported (one at DEBUG level)
    )
    args = build_parser().parse_args(argv)
    if getattr(args, "unsafe_load_checkpoint", False):
        from .checkpoint import allow_unsafe_loading

        logger.warning("--unsafe-load-checkpoint: checkpoints are unpickled fully and can run code")
        allow_unsafe_loading()
    try:
        args.func(args)
    except MagicError as err:
        print(f"fairseq-magic: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
