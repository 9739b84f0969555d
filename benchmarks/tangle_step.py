"""Gradient-based search step: DARTS mixture vs. TangleNAS superposition vs. one child.

For each of two spaces, side by side on the same batches (steps interleaved):

* ``mixture``: the super-net over separate operators, every layer the
  theta-weighted sum of all its candidates' outputs (``--relaxation mixture``);
* ``tangle``: the same candidates weight-entangled (``--weight-entanglement``),
  every layer one forward per operator kind with the superposed weights;
* ``child``: the largest single child as a stand-alone ``magic_child``
  (every layer the space's largest operator), trained with fairseq's masked_lm.

Both searches update theta by GAEA on the training batch (``--arch-objective
erm``), so a step is one forward and one backward for all three models (bilevel
adds one more forward/backward on a held-out batch to each search alike).

Spaces: ``elastic``, one operator kind with elastic size (FFN inner sizes,
quarter to full), where TangleNAS runs one operator per layer: target step and
memory within 1.2x of the largest child's; and ``kinds``, the MAGIC-style set
with two sizes of each kind (MHA, FFN, CONV), where the superposition still runs
one forward per kind.

    python benchmarks/tangle_step.py                # CPU-sized
    python benchmarks/tangle_step.py --size base    # BERT-base sizes (use a GPU)
"""

import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    ROOT, SIZES, batches, benchmark_parser, build, common_argv, device_args, device_name, make_data,
    memory_per_model, print_memory_of, timed_step,
)

MODELS = ("elastic-mixture", "elastic-tangle", "kinds-mixture", "kinds-tangle", "child")


def space_ops(space: str, size: str) -> str:
    _, hidden, ffn, heads, _, _ = SIZES[size]
    if space == "elastic":
        return ",".join(f"FFN{ffn * q // 4}" for q in (1, 2, 3, 4))
    return f"MHA{max(heads // 2, 1)},MHA{heads},FFN{ffn // 2},FFN{ffn},CONV3,CONV5"


def argv_for(model: str, data: str, size: str, extra) -> list:
    layers, _, ffn, heads, _, _ = SIZES[size]
    plugin = ["--user-dir", os.path.join(ROOT, "fairseq_magic")]
    if model == "child":  # the largest child of both spaces: FFN<ffn> in every layer
        return common_argv(data, size, extra) + plugin + [
            "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "magic_child",
            "--child-arch", ",".join([f"FFN{ffn}"] * 2 * layers),
        ]
    space, kind = model.split("-")
    return common_argv(data, size, extra) + plugin + [
        "--task", "magic_masked_lm", "--criterion", "magic_mlm", "--arch", "magic_supernet",
        "--supernet-layers", str(2 * layers), "--embed-factor-dim", "0", "--candidate-ops", space_ops(space, size),
        "--relaxation", "mixture", "--arch-optimizer", "gaea", "--arch-objective", "erm",
    ] + (["--weight-entanglement"] if kind == "tangle" else [])


def main():
    args = benchmark_parser(__doc__, steps=20, models=MODELS).parse_args()
    extra = device_args(args.fp16, args.bf16)
    batch_size = SIZES[args.size][5]
    if args.memory_of:
        print_memory_of(lambda: build(argv_for(args.memory_of, args.data, args.size, extra)), args.warmup + 5, batch_size)
        return

    data = args.data or make_data(tempfile.mkdtemp(prefix="magic-bench-"), args.vocab)
    trainers = {name: build(argv_for(name, data, args.size, extra)) for name in MODELS}
    times = {name: [] for name in MODELS}
    order = list(MODELS)
    for i, sample in enumerate(batches(trainers["child"][1], args.warmup + args.steps, batch_size)):
        for name in order if i % 2 else order[::-1]:
            t = timed_step(trainers[name][0], sample)
            if i >= args.warmup:
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    del trainers
    mem = memory_per_model(__file__, MODELS, data, args)

    print(f"device: {device_name()}; size: {args.size} {SIZES[args.size]}; steps: {args.steps} (+{args.warmup} warm-up)")
    print(f"spaces: elastic {{{space_ops('elastic', args.size)}}}, kinds {{{space_ops('kinds', args.size)}}}; "
          f"child: the largest operator (FFN{SIZES[args.size][2]}) in every layer")
    print(f"{'model':<17}{'median step (ms)':>18}{'params':>14}{'peak memory (MiB)':>20}{'step / child':>14}{'memory / child':>16}")
    for name in MODELS:
        print(f"{name:<17}{med[name] * 1e3:>18.1f}{mem[name]['params']:>14,}{mem[name]['peak_bytes'] / 2**20:>20.1f}"
              f"{med[name] / med['child']:>14.3f}{mem[name]['peak_bytes'] / mem['child']['peak_bytes']:>16.3f}")
    print(f"memory: {mem['child']['kind']}")
    for space in ("elastic", "kinds"):
        tangle = f"{space}-tangle"
        print(f"{space}: tangle/child step {med[tangle] / med['child']:.3f}, memory "
              f"{mem[tangle]['peak_bytes'] / mem['child']['peak_bytes']:.3f}; mixture/tangle step "
              f"{med[f'{space}-mixture'] / med[tangle]:.3f}" + ("  (target: tangle/child <= 1.2 for both)" if space == "elastic" else ""))


if __name__ == "__main__":
    main()
