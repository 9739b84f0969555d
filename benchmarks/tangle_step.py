"""Gradient-based search step: DARTS mixture vs. TangleNAS superposition vs. one child.

For each of two spaces, side by side on the same batches (steps interleaved):

* ``mixture``: the super-net over separate operators, every layer the
  theta-weighted sum of all its candidates' outputs (``--relaxation mixture``);
* ``tangle``: the same candidates weight-entangled (``--weight-entanglement``),
  every layer one forward per operator kind with the superposed weights;
* ``child``: the space's largest single child as a stand-alone ``magic_child``
  (every layer its largest operator), trained with fairseq's masked_lm.

Both searches update theta by GAEA on the training batch (``--arch-objective
erm``), so a step is one forward and one backward for all three models (bilevel
adds one more forward/backward on a held-out batch to each search alike).

Spaces: ``bert``, layers alternating elastic attention (half or all heads) and
elastic FFN (half or full inner size), where TangleNAS runs one operator per
layer: target step and memory within 1.2x of its largest child's (RoBERTa's
layout at full size); and ``kinds``, every layer choosing among two sizes of each
kind (MHA, FFN, CONV), where the superposition runs one forward per kind and
the largest child has the largest FFN in every layer.

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
    interleaved_times, memory_per_model, print_memory_of,
)

SPACES = ("bert", "kinds")
MODELS = tuple(f"{space}-{kind}" for space in SPACES for kind in ("mixture", "tangle", "child"))


def space_ops(space: str, size: str) -> str:
    _, hidden, ffn, heads, _, _ = SIZES[size]
    if space == "bert":
        return f"MHA{max(heads // 2, 1)},MHA{heads}|FFN{ffn // 2},FFN{ffn}"
    return f"MHA{max(heads // 2, 1)},MHA{heads},FFN{ffn // 2},FFN{ffn},CONV3,CONV5"


def largest_child(space: str, size: str) -> str:
    layers, _, ffn, heads, _, _ = SIZES[size]
    return ",".join([f"MHA{heads}", f"FFN{ffn}"] * layers if space == "bert" else [f"FFN{ffn}"] * 2 * layers)


def argv_for(model: str, data: str, size: str, extra) -> list:
    layers, hidden, ffn, heads, _, _ = SIZES[size]
    plugin = ["--user-dir", os.path.join(ROOT, "fairseq_magic")]
    space, kind = model.split("-")
    if kind == "child":  # stand-alone; its MHA has the super-nets' head width (hidden / heads)
        return common_argv(data, size, extra) + plugin + [
            "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "magic_child",
            "--child-arch", largest_child(space, size), "--attention-head-dim", str(hidden // heads),
        ]
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
    samples = batches(trainers["bert-child"][1], args.warmup + args.steps, batch_size)
    times = interleaved_times({name: trainers[name][0] for name in MODELS}, samples, args.warmup)
    med = {k: statistics.median(v) for k, v in times.items()}
    del trainers
    mem = memory_per_model(__file__, MODELS, data, args)

    print(f"device: {device_name()}; size: {args.size} {SIZES[args.size]}; steps: {args.steps} (+{args.warmup} warm-up)")
    for space in SPACES:
        print(f"space {space}: {{{space_ops(space, args.size)}}}; largest child {largest_child(space, args.size)}")
    print(f"{'model':<15}{'median step (ms)':>18}{'params':>14}{'peak memory (MiB)':>20}{'step / child':>14}{'memory / child':>16}")
    for name in MODELS:
        child = name.split("-")[0] + "-child"
        print(f"{name:<15}{med[name] * 1e3:>18.1f}{mem[name]['params']:>14,}{mem[name]['peak_bytes'] / 2**20:>20.1f}"
              f"{med[name] / med[child]:>14.3f}{mem[name]['peak_bytes'] / mem[child]['peak_bytes']:>16.3f}")
    print(f"memory: {mem['bert-child']['kind']}")
    for space in SPACES:
        tangle, child = f"{space}-tangle", f"{space}-child"
        print(f"{space}: tangle/child step {med[tangle] / med[child]:.3f}, memory "
              f"{mem[tangle]['peak_bytes'] / mem[child]['peak_bytes']:.3f}; mixture/tangle step "
              f"{med[f'{space}-mixture'] / med[tangle]:.3f}" + ("  (target: tangle/child <= 1.2 for both)" if space == "bert" else ""))


if __name__ == "__main__":
    main()
