"""MAGIC-T and MAGIC-AT training steps vs. SPOS, side by side.

A step's cost depends on which child runs, so all methods run the same
children: the MAGIC-T walk from (seed, update, previous). The SPOS reference is
handed that sequence; MAGIC-T computes it with its sampler. MAGIC-A and
MAGIC-AT add the alignment term:

* the anchor's forward without a graph, up to the last aligned layer, and the MSE;
* with the default ``--align-dropout clean``, a dropout-free forward and
  backward of the child's layers up to there (the anchor's forward reuses the
  layers the two share). Both run on a quarter of each batch's sentences
  (the default ``--align-batch-fraction 0.25``); ``magic-at-half`` and
  ``magic-at-all`` on half and all of them; ``magic-at-train-eval`` (all
  sentences) takes the training forward's states instead;
* the anchor's scoring every --anchor-eval-interval updates (shared-prefix
  scoring of the child and the anchor), amortised over the timed steps. The
  first anchor is chosen once, before the timed steps, from 10 scored children.

Steps are interleaved on the same batches.

Prints the mean step time of each method and the ratios MAGIC-T / SPOS (target
<= 1.02) and MAGIC-AT / SPOS (target <= 1.20), and each method's peak memory
(fresh process per method). The fair samplers run the same steps as SPOS and
MAGIC-T (FairNAS: one child per micro-batch); what they add is the draw of the
child, timed apart for every sampler (a fair gradual walk's draw reads the
training counts of every (layer, operator) and adjacent pair).

    python benchmarks/magic_step.py [--size base] [--steps 100]
"""

import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    SIZES, batches, benchmark_parser, build, device_args, device_name, make_data, memory_per_model, print_memory_of,
    interleaved_times, supernet_argv,
)

ALIGN = ["--align-lambda", "0.5", "--align-every", "4", "--align-warmup-epochs", "0", "--anchor-init-children", "10"]
METHODS = {
    "spos": ["--sampler", "uniform"],
    "magic-t": ["--sampler", "gradual", "--gradual-k", "1"],
    "magic-a": ["--sampler", "uniform", *ALIGN],
    "magic-at": ["--sampler", "gradual", "--gradual-k", "1", *ALIGN],
    "magic-at-half": ["--sampler", "gradual", "--gradual-k", "1", *ALIGN, "--align-batch-fraction", "0.5"],
    "magic-at-all": ["--sampler", "gradual", "--gradual-k", "1", *ALIGN, "--align-batch-fraction", "1"],
    "magic-at-train-eval": ["--sampler", "gradual", "--gradual-k", "1", *ALIGN, "--align-dropout", "train-eval",
                            "--align-batch-fraction", "1"],
}


def build_method(method: str, data: str, size: str, extra, interval: int):
    argv = supernet_argv(data, size, extra) + METHODS[method] + ["--anchor-eval-interval", str(interval)]
    if size == "tiny":  # 4 layers: align H_2 (H_4 is the final layer's output)
        argv += ["--align-every", "2"]
    trainer, task = build(argv)
    if method in ("spos", "magic-a"):  # handed the MAGIC-T walk, so that every method runs the same children
        from fairseq_magic.training.samplers import GradualSampler

        task.strategy.sampler = GradualSampler(task.strategy.space, task.cfg.seed, gradual_k=1)
    return trainer, task


def draw_times(space, updates: int = 2000) -> dict:
    """Mean seconds per update of each sampler's draw, counts kept as training keeps them."""
    import time

    from fairseq_magic.training.samplers import SAMPLERS, build_sampler
    from fairseq_magic.training.training_share import TrainingShares

    out = {}
    for name in SAMPLERS:
        sampler, shares, child = build_sampler(name, space, seed=1), TrainingShares(space), None
        start = time.perf_counter()
        for update in range(updates):
            child = sampler(update, child, shares=shares)
            shares.add(child)
        out[name] = (time.perf_counter() - start) / updates
    return out


def main():
    parser = benchmark_parser(__doc__, steps=100, models=METHODS)
    parser.add_argument("--anchor-eval-interval", type=int, default=100)
    args = parser.parse_args()
    extra = device_args(args.fp16, args.bf16)
    batch_size = SIZES[args.size][5]
    if args.memory_of:
        build_one = lambda: build_method(args.memory_of, args.data, args.size, extra, args.anchor_eval_interval)  # noqa: E731
        print_memory_of(build_one, args.warmup + 5, batch_size)
        return

    data = args.data or make_data(tempfile.mkdtemp(prefix="magic-bench-"), args.vocab)
    trainers = {m: build_method(m, data, args.size, extra, args.anchor_eval_interval) for m in METHODS}
    samples = batches(trainers["spos"][1], args.warmup + args.steps, batch_size)
    times = interleaved_times({m: trainers[m][0] for m in METHODS}, samples, args.warmup)
    mean = {m: statistics.mean(v) for m, v in times.items()}

    mem = memory_per_model(__file__, METHODS, data, args, "--anchor-eval-interval", str(args.anchor_eval_interval))

    print(f"device: {device_name()}; size: {args.size} {SIZES[args.size]}; steps: {args.steps} (+{args.warmup} warm-up); "
          f"anchor scored every {args.anchor_eval_interval} updates on 256 sentences")
    print(f"{'method':<20}{'mean step (ms)':>16}{'/ SPOS':>9}{'peak memory (MiB)':>20}")
    for m in METHODS:
        print(f"{m:<20}{mean[m] * 1e3:>16.1f}{mean[m] / mean['spos']:>9.3f}{mem[m]['peak_bytes'] / 2**20:>20.1f}")
    print(f"MAGIC-T / SPOS: {mean['magic-t'] / mean['spos']:.3f} (target <= 1.02); "
          f"MAGIC-AT / SPOS: {mean['magic-at'] / mean['spos']:.3f} (target <= 1.20; clean alignment, a quarter of "
          f"each batch); MAGIC-AT on all sentences / SPOS: {mean['magic-at-all'] / mean['spos']:.3f}; "
          f"MAGIC-AT train-eval / SPOS: {mean['magic-at-train-eval'] / mean['spos']:.3f}; memory: {mem['spos']['kind']}")
    draws = draw_times(trainers["spos"][1].strategy.space)
    print("sampler draw per update (ms), incl. counting: " + ", ".join(f"{n} {t * 1e3:.3f}" for n, t in draws.items())
          + f"; the fair gradual walk's draw / SPOS step: {draws['fair-gradual'] / mean['spos']:.4f}")


if __name__ == "__main__":
    main()
