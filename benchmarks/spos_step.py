"""SPOS super-net training step vs. a plain fairseq RoBERTa step, side by side.

Both models run the same architecture: RoBERTa with L layers, and the super-net
with 2L layers whose child is fixed to MHA,FFN,MHA,FFN,... (each RoBERTa layer
is an MHA sub-layer followed by an FFN sub-layer). The super-net also holds
CONV3 and CONV5 candidates, which the child does not use. Both go through
fairseq's Trainer.train_step (the super-net through the normal SPOS task path)
on the same batches, steps interleaved so that the machine's state affects both
alike.

Prints the median step time of each and their ratio (target: super-net / plain
<= 1.05), and the peak memory of each, measured in a fresh process per model,
next to what the super-net's extra parameters account for.

    python benchmarks/spos_step.py                 # CPU-sized
    python benchmarks/spos_step.py --size base     # BERT-base sizes (use a GPU)
"""

import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    SIZES, batches, benchmark_parser, build, common_argv, device_args, device_name, make_data, memory_per_model,
    interleaved_times, print_memory_of, supernet_argv,
)

MODELS = ("roberta", "supernet")


def argv_for(model: str, data: str, size: str, extra) -> list:
    if model == "roberta":
        layers, _, _, heads, _, _ = SIZES[size]
        return common_argv(data, size, extra) + [
            "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta",
            "--encoder-layers", str(layers), "--encoder-attention-heads", str(heads),
        ]
    return supernet_argv(data, size, extra)


def build_fixed(model: str, data: str, size: str, extra):
    trainer, task = build(argv_for(model, data, size, extra))
    if model == "supernet":  # the fixed MHA/FFN child, handed to the normal SPOS path
        task.strategy.sampler = FixedChild(task.strategy.space)
    return trainer, task


class FixedChild:
    """A sampler (training/samplers.py's interface) that always gives MHA,FFN,MHA,FFN,..."""

    per_micro_batch = False

    def __init__(self, space):
        self.child = tuple(i % 2 for i in range(space.num_layers))

    def __call__(self, update_num, previous=None, allowed=None, micro=0, shares=None):
        return self.child


def main():
    args = benchmark_parser(__doc__, steps=30, models=MODELS).parse_args()
    extra = device_args(args.fp16, args.bf16)
    batch_size = SIZES[args.size][5]
    if args.memory_of:
        print_memory_of(lambda: build_fixed(args.memory_of, args.data, args.size, extra), args.warmup + 5, batch_size)
        return

    data = args.data or make_data(tempfile.mkdtemp(prefix="magic-bench-"), args.vocab)
    plain, plain_task = build_fixed("roberta", data, args.size, extra)
    supernet, _ = build_fixed("supernet", data, args.size, extra)
    samples = batches(plain_task, args.warmup + args.steps, batch_size)
    times = interleaved_times({"roberta": plain, "supernet": supernet}, samples, args.warmup)
    med = {k: statistics.median(v) for k, v in times.items()}

    mem = memory_per_model(__file__, MODELS, data, args)
    extra_params = mem["supernet"]["params"] - mem["roberta"]["params"]
    bytes_per_param = 2 if (args.fp16 or args.bf16) else 4  # unsampled operators: weights only, no grads, no Adam state
    print(f"device: {device_name()}; size: {args.size} {SIZES[args.size]}; steps: {args.steps} (+{args.warmup} warm-up)")
    print(f"{'model':<10}{'median step (ms)':>18}{'params':>14}{'peak memory (MiB)':>20}")
    for name in ("roberta", "supernet"):
        print(f"{name:<10}{med[name] * 1e3:>18.1f}{mem[name]['params']:>14,}{mem[name]['peak_bytes'] / 2**20:>20.1f}")
    print(f"step ratio supernet/roberta: {med['supernet'] / med['roberta']:.3f}  (target <= 1.05)")
    diff = mem["supernet"]["peak_bytes"] - mem["roberta"]["peak_bytes"]
    print(
        f"memory: super-net - plain = {diff / 2**20:.1f} MiB ({mem['roberta']['kind']}); "
        f"its {extra_params:,} extra parameters account for {extra_params * bytes_per_param / 2**20:.1f} MiB "
        f"(weights; {extra_params * (bytes_per_param + 8) / 2**20:.1f} MiB with Adam's fp32 state once they are sampled)"
    )


if __name__ == "__main__":
    main()
