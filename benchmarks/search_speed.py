"""How fast children are scored: shared-prefix scoring against one forward per child.

Three ways of scoring the same children on the same cached batches, rounds
alternating: plain forward passes (``model(tokens, masked_tokens=...)`` under
no_grad, nothing else), ``scoring.score_children`` with one forward per child
(``shared_prefixes=False``), and ``score_children`` as search, rank correlation,
shrinking and the anchor call it, walking the children's layer prefixes so that
a shared prefix is computed once. The sets of children: uniform random children
of the space, and the first and tenth generation of an evolution (mutations and
crossovers of the best of a population, as ``search.evolution`` makes them).

Prints children per second of each and the ratios: per-child scoring / plain
(target >= 0.9), shared-prefix / per-child on uniform children (target >= 1.3)
and on an evolution generation (target >= 2.0). Each line also gives the
number of distinct layer prefixes, the layer forwards the walk runs.

    python benchmarks/search_speed.py [--size base] [--children 50]
"""

import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    SIZES, benchmark_parser, build, device_args, device_name, make_data, supernet_argv, timed,
)


def evolution_generation(space, rng, population: int, before: int = 0, parents: int = 10, mutation_prob: float = 0.1):
    """The children of one generation as search.evolution makes them: half mutations,
    half crossovers of the best ``parents`` of the population. ``before`` generations
    are evolved first under a stand-in score (the number of FFN layers; speed does not
    depend on which score selects), so that the parents are related as in a running search."""
    from fairseq_magic.training.samplers import uniform_child
    from fairseq_magic.search.evolution import crossover, mutate

    ffn = space.candidate_names.index("FFN")
    current = [uniform_child(space, rng) for _ in range(population)]
    for _ in range(before + 1):
        top = sorted(current, key=lambda c: -sum(op == ffn for op in c))[:parents]
        pick = lambda: top[int(rng.integers(len(top)))]  # noqa: E731
        mutants = [mutate(pick(), space, mutation_prob, rng) for _ in range(population // 2)]
        current = mutants + [crossover(pick(), pick(), rng) for _ in range(population - len(mutants))]
    return current


def scoring_inputs(model, task, children: int, sentences: int, batch_size: int):
    """What scoring is timed on: the cached validation batches on the model's device, and the sets of
    children (uniform; the first and the tenth generation of an evolution)."""
    from fairseq import utils

    from fairseq_magic.search.scoring import validation_batches
    from fairseq_magic.streams import rng_for
    from fairseq_magic.training.samplers import uniform_child

    space = task.strategy.space
    device = next(model.parameters()).device
    batches = [utils.apply_to_sample(lambda t: t.to(device), b)
               for b in validation_batches(task, "valid", sentences, batch_size)]
    rng = rng_for(1, 99)
    return batches, {"uniform": [uniform_child(space, rng) for _ in range(children)],
                     "evolution": evolution_generation(space, rng, children),
                     "evolution-10": evolution_generation(space, rng, children, before=9)}


def main():
    parser = benchmark_parser(__doc__, steps=3, models=())
    parser.add_argument("--children", type=int, default=50, help="children per set (an evolution population)")
    parser.add_argument("--sentences", type=int, default=128)
    args = parser.parse_args()
    from fairseq_magic.search.scoring import score_children

    data = args.data or make_data(tempfile.mkdtemp(prefix="magic-bench-"), args.vocab)
    trainer, task = build(supernet_argv(data, args.size, device_args(args.fp16, args.bf16)))
    model = trainer.model.eval()
    space = task.strategy.space
    batches, sets = scoring_inputs(model, task, args.children, args.sentences, SIZES[args.size][5])
    pad = task.source_dictionary.pad()

    def plain(children):
        with torch.no_grad():
            for child in children:
                model.set_child(child)
                for b in batches:
                    model(**b["net_input"], masked_tokens=b["target"].ne(pad))

    ways = {
        "plain": plain,
        "per-child": lambda children: score_children(model, model, children, batches, shared_prefixes=False),
        "shared": lambda children: score_children(model, model, children, batches),
    }

    print(f"device: {device_name()}; size: {args.size}; space: {space.describe()}; {args.children} children x "
          f"{len(batches)} batches ({args.sentences} sentences); {args.steps} rounds")
    rate = {}
    for name, children in sets.items():
        for fn in ways.values():
            timed(fn, children)  # warm-up
        rounds = {way: [] for way in ways}
        for _ in range(args.steps):
            for way, fn in ways.items():
                rounds[way].append(timed(fn, children)[0])
        rate[name] = {way: len(children) / statistics.median(t) for way, t in rounds.items()}
        distinct = len({tuple(c[:n]) for c in children for n in range(1, space.num_layers + 1)})
        print(f"{name}: " + "; ".join(f"{way} {r:.2f} children/s" for way, r in rate[name].items())
              + f" ({distinct} distinct prefixes against {len(children) * space.num_layers} layer forwards)")
    print(f"ratio scoring/plain {rate['uniform']['per-child'] / rate['uniform']['plain']:.3f} (target >= 0.9); "
          f"shared/per-child: uniform {rate['uniform']['shared'] / rate['uniform']['per-child']:.3f} "
          f"(target >= 1.3), evolution generation 1 {rate['evolution']['shared'] / rate['evolution']['per-child']:.3f} "
          f"and 10 {rate['evolution-10']['shared'] / rate['evolution-10']['per-child']:.3f} (target >= 2.0)")


if __name__ == "__main__":
    main()
