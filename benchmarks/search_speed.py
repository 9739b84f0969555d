"""How fast search scores children, against plain forward passes.

Scores N children of a super-net with ``scoring.score_children`` (the path the
search command and the anchor use) and runs plain forward passes of the same
children on the same cached batches (``model(tokens, masked_tokens=...)``
under no_grad, nothing else), alternating, and prints children per second of
each and the ratio scoring / plain (target >= 0.9).

    python benchmarks/search_speed.py [--size base] [--children 40]
"""

import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SIZES, benchmark_parser, build, device_args, device_name, make_data, supernet_argv  # noqa: E402


def main():
    parser = benchmark_parser(__doc__, steps=3, models=())
    parser.add_argument("--children", type=int, default=40)
    parser.add_argument("--sentences", type=int, default=128)
    args = parser.parse_args()
    from fairseq import utils

    from fairseq_magic.samplers import uniform_child
    from fairseq_magic.streams import rng_for
    from fairseq_magic.scoring import score_children, validation_batches

    data = args.data or make_data(tempfile.mkdtemp(prefix="magic-bench-"), args.vocab)
    trainer, task = build(supernet_argv(data, args.size, device_args(args.fp16, args.bf16)))
    model = trainer.model.eval()
    device = next(model.parameters()).device
    batches = [utils.apply_to_sample(lambda t: t.to(device), b)
               for b in validation_batches(task, "valid", args.sentences, SIZES[args.size][5])]
    rng = rng_for(1, 99)
    children = [uniform_child(task.strategy.space, rng) for _ in range(args.children)]
    pad = task.source_dictionary.pad()

    def plain():
        with torch.no_grad():
            for child in children:
                model.set_child(child)
                for b in batches:
                    model(**b["net_input"], masked_tokens=b["target"].ne(pad))

    def scoring():
        score_children(model, model, children, batches)

    def timed(fn):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed(plain), timed(scoring)  # warm-up
    rounds = {"plain": [], "scoring": []}
    for _ in range(args.steps):
        rounds["plain"].append(timed(plain))
        rounds["scoring"].append(timed(scoring))
    rate = {k: args.children / statistics.median(v) for k, v in rounds.items()}
    print(f"device: {device_name()}; size: {args.size}; {args.children} children x {len(batches)} batches "
          f"({args.sentences} sentences); {args.steps} rounds")
    print(f"plain forward: {rate['plain']:.2f} children/s; scoring: {rate['scoring']:.2f} children/s; "
          f"ratio scoring/plain {rate['scoring'] / rate['plain']:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
