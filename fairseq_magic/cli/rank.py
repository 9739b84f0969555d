"""Commands that measure super-nets: rank correlation with stand-alone training (Table 1), interference
(Fig. 2)."""

import os
import sys

from ..errors import MagicError
from ..ranges import ranged
from .options import (
    logger, SEED, add_checkpoint_option, add_progress_option, add_scoring_options, add_unsafe_option, layer_list,
    load_supernet_for_scoring, progress_bar, supernet_labels, writable_folder,
)


def cmd_rank_sample(args) -> None:
    from ..analysis import rank_correlation
    from ..checkpoint import load_supernet_checkpoint

    writable_folder(args.out)
    _, _, space = load_supernet_checkpoint(args.checkpoint)
    if args.list:
        from ..data.corpus import read_text_lines

        children = [space.parse(line.strip()) for line in read_text_lines(args.list, "--list file") if line.strip()]
        names = rank_correlation.write_children(space, children, args.out)
    else:
        names = rank_correlation.sample_children(space, args.seed, args.children, args.out)
    print(f"{len(names)} children of {space.describe()} written to {args.out}")


def cmd_rank_train(args) -> None:
    import shlex

    from .. import jobs
    from ..analysis import ground_truth, rank_correlation

    if bool(args.finetune_data) != bool(args.finetune_args):
        raise MagicError("--finetune-data and --finetune-args go together")
    words = [s.strip() for s in args.seeds.split(",")]
    if not all(w.isdigit() for w in words) or len(set(map(int, words))) != len(words):
        raise MagicError(f"--seeds must list distinct integers >= 0, comma-separated, got '{args.seeds}'")
    seeds = [int(w) for w in words]
    options = {}
    for option in ("--train-args", "--finetune-args"):  # checked before any job starts
        try:
            options[option] = shlex.split(getattr(args, option[2:].replace("-", "_")))
        except ValueError as err:
            raise MagicError(f"{option}: {err}") from None
    if "--disable-validation" in options["--train-args"]:
        raise MagicError("--train-args: the ground truth is each child's best validation loss, so it cannot "
                         "hold --disable-validation")
    launch = jobs.launch_options(args)
    with progress_bar(args, "trainings", "run") as bar:
        truth = ground_truth.train_children(
            args.dir, args.data, options["--train-args"], args.finetune_data, options["--finetune-args"],
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
    from ..analysis import rank_correlation
    from ..analysis.ground_truth import read_truth
    from ..search.ensemble import Ensemble

    writable_folder(args.out)
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
    from ..training.training_share import TrainingShares

    if not state.visits:
        return None
    shares = TrainingShares(space, state.visits)
    return dict(shares.summary(state.allowed), over_training=[shares.over_training(c) for c in children])


def cmd_interference(args) -> None:
    """Gradient cosine similarity of children on a shared operator (Fig. 2, 8)."""
    from ..analysis.interference import measure, write_report

    checkpoints = [args.checkpoint] + ([args.compare] if args.compare else [])
    labels = supernet_labels(args.labels, checkpoints)
    layers = layer_list(args.layers)
    writable_folder(args.out)
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


def add_commands(sub) -> None:
    """The subcommands of this family, each with its options."""
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
    from ..jobs import add_launch_options

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
