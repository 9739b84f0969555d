"""Commands that search a trained super-net: evolution or random search, few-shot sub-super-nets."""

import os

from ..errors import MagicError
from ..ranges import ranged
from .options import (
    logger, SEED, add_checkpoint_option, add_progress_option, add_scoring_options, layer_list,
    load_supernet_for_scoring, progress_bar, writable_folder,
)


def cmd_search(args) -> None:
    """Evolution or random search over a trained super-net under size limits."""
    import numpy as np

    from ..search.evolution import (
        Constraints, Limits, evolution, plain_transformers, random_search, sub_space, write_results,
    )
    from ..search.ensemble import Ensemble
    from ..search.rerank import rerank, training_options

    writable_folder(args.out)
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
        reranked = rerank([ensemble.checkpoint_of(c) for c in top], top, [results[c].loss for c in top], args.data,
                          args.out, args.rerank_updates, rerank_args, args.cpu, log=logger.info)
        best = min(reranked, key=lambda r: r.trained_loss).child
    best = best or max(results, key=lambda c: results[c].value(args.metric))
    settings = {"checkpoint": os.path.abspath(ensemble.checkpoint_of(best)),  # where export finds its weights
                **({"ensemble": [os.path.abspath(c) for c in ensemble.checkpoints]} if len(ensemble) > 1 else {}),
                "algorithm": "all plain Transformers" if every else args.algorithm, "seed": args.seed,
                "metric": args.metric, "sentences": args.sentences, "subset": args.subset, "limits": vars(limits),
                "candidate_ops": args.candidate_ops or space.candidate_ops}
    if args.rerank:
        settings["rerank"] = {"updates": args.rerank_updates, "args": args.rerank_args,
                              "children": [{"arch": space.format(r.child), "shared_loss": r.shared_loss,
                                            "trained_loss": r.trained_loss} for r in reranked]}
    print(write_results(results, constraints, args.metric, args.top, settings, args.out, best=best))


def cmd_few_shot(args) -> None:
    """Split a warm-up super-net into few-shot sub-super-nets by its candidates' gradient similarity."""
    from ..search.few_shot import (
        check_one_shot, describe, measure_layers, splittable, sub_supernet_paths, write_sub_supernets,
    )

    writable_folder(args.out)
    sub_supernet_paths(args.out, args.groups)  # checked before any work
    model, _, space, batches = load_supernet_for_scoring(args, args.checkpoint)
    check_one_shot(model.search_state.split, args.checkpoint)
    layers = splittable(model, args.groups) if args.layer == "auto" else layer_list(args.layer, "--layer")
    with progress_bar(args, "similarity matrices", "matrix", total=len(layers) * args.repeats) as bar:
        measured = measure_layers(model, batches, layers, args.groups, args.repeats, args.seed, progress=bar)
    for split in measured:
        logger.info(describe(split, space))
    chosen = min(measured, key=lambda s: (s.cut, s.layer))
    paths = write_sub_supernets(args.checkpoint, chosen, measured, args.out, space, groups_asked=args.groups,
                                repeats=args.repeats, sentences=args.sentences, seed=args.seed)
    print(f"split {describe(chosen, space)}")
    print(f"{len(paths)} sub-super-nets: train each by resuming in its folder (fairseq-train ... --save-dir "
          f"{os.path.dirname(paths[0])}); score them as one estimator with --checkpoint {'+'.join(paths)}")


def add_commands(sub) -> None:
    """The subcommands of this family, each with its options."""
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

    p = sub.add_parser(
        "few-shot", help="split a warm-up super-net into sub-super-nets where its candidates interfere most",
        description="Few-shot super-nets (Zhao et al. 2021; GM-NAS): measure, on the warm-up super-net, the "
        "gradient similarity of each layer's candidates (on an operator of the layer below, as 'interference' "
        "does), split the layer whose best balanced partition into --groups groups has the lowest similarity "
        "across groups, and write one sub-super-net per group (OUT/subI/checkpoint_last.pt: the warm-up, "
        "restricted to the group) and OUT/split.json. Train each by resuming in its folder; score them joined by "
        "'+' (search, rank correlate): each child is scored by the sub-super-net that holds it.",
    )
    add_checkpoint_option(p, "the one-shot warm-up's checkpoint")
    p.add_argument("--out", required=True, help="where split.json and the sub-super-nets' folders go")
    p.add_argument("--groups", type=ranged(int, "[2, inf)"), default=2, help="sub-super-nets (K)")
    p.add_argument("--layer", default="auto",
                   help="the layer to split (0-based, >= 1), or 'auto': the layer whose candidates interfere most")
    p.add_argument("--repeats", type=ranged(int, "[1, inf)"), default=10,
                   help="random operators and paths averaged per layer")
    p.add_argument("--seed", type=SEED, default=1)
    add_progress_option(p)
    add_scoring_options(p, sentences=64, batch_size=64)
    p.set_defaults(func=cmd_few_shot)
