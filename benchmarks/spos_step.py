"""SPOS super-net training step vs. a plain fairseq RoBERTa step, side by side.

Both models run the same architecture: RoBERTa with L layers, and the super-net
with 2L layers whose child is fixed to MHA,FFN,MHA,FFN,... (each RoBERTa layer
is an MHA sub-layer followed by an FFN sub-layer).  The super-net holds CONV3
and CONV5 candidates too, which the child does not use.  Both go through
fairseq's Trainer.train_step on the same batches, steps interleaved, so the
machine's state affects both alike.

Prints the median step time of each and their ratio (target: super-net / plain
<= 1.05), and the peak memory of each, measured in a separate process per model
(CUDA: max allocated; CPU: peak RSS above the process's state before the model
was built), next to what the super-net's extra parameters account for.

    python benchmarks/spos_step.py                 # CPU-sized
    python benchmarks/spos_step.py --size base     # BERT-base sizes (use a GPU)
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {  # layers (RoBERTa), hidden, ffn, heads, tokens per sample, batch size
    "small": (4, 256, 1024, 4, 128, 16),
    "base": (12, 768, 3072, 12, 128, 32),
}


def make_data(workdir: str, vocab: int) -> str:
    from fairseq_magic.corpus import synthetic_corpus

    synthetic_corpus(os.path.join(workdir, "train.txt"), 20000, seed=0, vocab=vocab)
    subprocess.run(
        [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref",
         os.path.join(workdir, "train.txt"), "--destdir", os.path.join(workdir, "bin"), "--workers", "2"],
        check=True, capture_output=True,
    )
    return os.path.join(workdir, "bin")


def argv_for(model: str, data: str, size: str, device_args) -> list:
    layers, hidden, ffn, heads, tps, bsz = SIZES[size]
    common = [
        data, "--optimizer", "adam", "--lr", "1e-4", "--weight-decay", "0.01", "--seed", "1",
        "--tokens-per-sample", str(tps), "--batch-size", str(bsz), "--encoder-embed-dim", str(hidden),
        "--encoder-ffn-embed-dim", str(ffn), "--dropout", "0.1", "--attention-dropout", "0.1",
        "--num-workers", "0", "--save-dir", "unused", *device_args,
    ]
    if model == "roberta":
        return common + ["--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta",
                         "--encoder-layers", str(layers), "--encoder-attention-heads", str(heads)]
    return common + [
        "--user-dir", os.path.join(ROOT, "fairseq_magic"), "--task", "magic_masked_lm", "--criterion", "magic_mlm",
        "--arch", "magic_supernet", "--supernet-layers", str(2 * layers), "--embed-factor-dim", "0",
        "--candidate-ops", f"MHA{heads},FFN,CONV3,CONV5",
    ]


def build(argv):
    """A fairseq Trainer built exactly as fairseq-train builds it."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    if hasattr(task, "sampler"):  # the fixed MHA/FFN child, through the normal SPOS path
        child = tuple(i % 2 for i in range(task.space.num_layers))
        task.sampler = lambda update_num, previous=None: child
    return trainer, task


def batches(task, n):
    """The first ``n`` training batches, masked by the task exactly as in training."""
    epoch_itr = task.get_batch_iterator(dataset=task.dataset("train"), max_sentences=BATCH_SIZE, seed=1, num_workers=0)
    it = epoch_itr.next_epoch_itr(shuffle=True)
    return [next(it) for _ in range(n)]


def step(trainer, sample) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    trainer.train_step([sample])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class RSSPeak(threading.Thread):
    """Samples the resident set size every millisecond; torch kernels release the GIL."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = current_rss(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, current_rss())
            time.sleep(0.001)


def memory_of(model: str, data: str, size: str, steps: int, device_args) -> dict:
    """Run in a fresh process: peak memory of ``steps`` training steps of one model,
    counted from before the model was built (data and libraries excluded)."""
    import gc

    samples_argv = argv_for(model, data, size, device_args)
    gc.collect()
    baseline = torch.cuda.memory_allocated() if torch.cuda.is_available() else current_rss()
    sampler = None if torch.cuda.is_available() else RSSPeak()
    if sampler:
        sampler.start()
    trainer, task = build(samples_argv)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for sample in batches(task, steps):
        trainer.train_step([sample])
    params = sum(p.numel() for p in trainer.model.parameters())
    if sampler:
        sampler.running = False
        sampler.join()
        return {"peak_bytes": sampler.peak - baseline, "kind": "peak RSS above start", "params": params}
    return {"peak_bytes": torch.cuda.max_memory_allocated() - baseline, "kind": "cuda max allocated", "params": params}


def main():
    global BATCH_SIZE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--fp16", action="store_true", help="GPU only")
    parser.add_argument("--bf16", action="store_true", help="GPU only")
    parser.add_argument("--data", default="", help="a fairseq-preprocess'ed directory (default: generated)")
    parser.add_argument("--memory-of", choices=["roberta", "supernet"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    BATCH_SIZE = SIZES[args.size][5]
    device_args = [] if torch.cuda.is_available() else ["--cpu"]
    device_args += ["--fp16", "--fp16-no-flatten-grads"] if args.fp16 else []
    device_args += ["--bf16"] if args.bf16 else []

    if args.memory_of:
        print(json.dumps(memory_of(args.memory_of, args.data, args.size, args.warmup + 5, device_args)))
        return

    workdir = tempfile.mkdtemp(prefix="magic-bench-")
    data = args.data or make_data(workdir, args.vocab)
    plain, plain_task = build(argv_for("roberta", data, args.size, device_args))
    supernet, _ = build(argv_for("supernet", data, args.size, device_args))
    samples = batches(plain_task, args.warmup + args.steps)
    times = {"roberta": [], "supernet": []}
    for i, sample in enumerate(samples):
        for name, trainer in (("roberta", plain), ("supernet", supernet)) if i % 2 else (("supernet", supernet), ("roberta", plain)):
            t = step(trainer, sample)
            if i >= args.warmup:
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}

    mem = {}
    for name in ("roberta", "supernet"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-of", name, "--data", data, "--size", args.size,
             "--warmup", str(args.warmup)] + (["--fp16"] if args.fp16 else []) + (["--bf16"] if args.bf16 else []),
            check=True, capture_output=True, text=True,
        )
        mem[name] = json.loads(out.stdout.strip().splitlines()[-1])

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    extra_params = mem["supernet"]["params"] - mem["roberta"]["params"]
    # Unsampled operators get no gradient and no optimizer state: only their weights.
    bytes_per_param = 2 if (args.fp16 or args.bf16) else 4
    print(f"device: {device}; size: {args.size} {SIZES[args.size]}; steps: {args.steps} (+{args.warmup} warm-up)")
    print(f"{'model':<10}{'median step (ms)':>18}{'params':>14}{'peak memory (MiB)':>20}")
    for name in ("roberta", "supernet"):
        print(f"{name:<10}{med[name] * 1e3:>18.1f}{mem[name]['params']:>14,}{mem[name]['peak_bytes'] / 2**20:>20.1f}")
    print(f"step ratio supernet/roberta: {med['supernet'] / med['roberta']:.3f}  (target <= 1.05)")
    extra = mem["supernet"]["peak_bytes"] - mem["roberta"]["peak_bytes"]
    print(
        f"memory: super-net - plain = {extra / 2**20:.1f} MiB ({mem['roberta']['kind']}); "
        f"its {extra_params:,} extra parameters account for {extra_params * bytes_per_param / 2**20:.1f} MiB"
    )


BATCH_SIZE = 16

if __name__ == "__main__":
    main()
