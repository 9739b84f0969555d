"""Helpers shared by the benchmarks: data, trainers built as fairseq-train builds
them, batches, timing and peak memory."""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {  # layers (RoBERTa), hidden, ffn, heads, tokens per sample, batch size
    "tiny": (2, 32, 64, 2, 32, 8),  # for the smoke test only: figures at this size mean nothing
    "small": (4, 256, 1024, 4, 128, 16),
    "base": (12, 768, 3072, 12, 128, 32),
}


def make_data(workdir: str, vocab: int) -> str:
    """A generated corpus, binarised with fairseq-preprocess."""
    from fairseq_magic.data.corpus import synthetic_corpus

    synthetic_corpus(os.path.join(workdir, "train.txt"), int(os.environ.get("MAGIC_BENCH_LINES", 20000)), seed=0, vocab=vocab)
    synthetic_corpus(os.path.join(workdir, "valid.txt"), 500, seed=1, vocab=vocab)
    subprocess.run(
        [sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
         "--trainpref", os.path.join(workdir, "train.txt"), "--validpref", os.path.join(workdir, "valid.txt"),
         "--destdir", os.path.join(workdir, "bin"), "--workers", "2"],
        check=True, capture_output=True,
    )
    return os.path.join(workdir, "bin")


def device_args(fp16: bool = False, bf16: bool = False) -> list:
    args = [] if torch.cuda.is_available() else ["--cpu"]
    args += ["--fp16", "--fp16-no-flatten-grads"] if fp16 else []
    args += ["--bf16"] if bf16 else []
    return args


def common_argv(data: str, size: str, extra) -> list:
    layers, hidden, ffn, heads, tps, bsz = SIZES[size]
    return [
        data, "--optimizer", "adam", "--lr", "1e-4", "--weight-decay", "0.01", "--seed", "1",
        "--tokens-per-sample", str(tps), "--batch-size", str(bsz), "--encoder-embed-dim", str(hidden),
        "--encoder-ffn-embed-dim", str(ffn), "--dropout", "0.1", "--attention-dropout", "0.1",
        "--num-workers", "0", "--save-dir", "unused", *extra,
    ]


def supernet_argv(data: str, size: str, extra) -> list:
    layers, _, _, heads, _, _ = SIZES[size]
    return common_argv(data, size, extra) + [
        "--user-dir", os.path.join(ROOT, "fairseq_magic"), "--task", "magic_masked_lm", "--criterion", "magic_mlm",
        "--arch", "magic_supernet", "--supernet-layers", str(2 * layers), "--embed-factor-dim", "0",
        "--candidate-ops", f"MHA{heads},FFN,CONV3,CONV5",
    ]


def build(argv):
    """A fairseq Trainer built exactly as fairseq-train builds it, and its task."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    task.load_dataset("valid", combine=False, epoch=1)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion), task


def batches(task, n: int, batch_size: int):
    """The first ``n`` training batches, masked by the task exactly as in training."""
    epoch_itr = task.get_batch_iterator(dataset=task.dataset("train"), max_sentences=batch_size, seed=1, num_workers=0)
    it = epoch_itr.next_epoch_itr(shuffle=True)
    return [next(it) for _ in range(n)]


def timed(fn, *args):
    """(seconds, result) of ``fn(*args)``, the GPU's queued work finished before and after."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def timed_step(trainer, sample) -> float:
    return timed(trainer.train_step, [sample])[0]


def interleaved_times(trainers: dict, samples, warmup: int) -> dict:
    """Step times of each trainer on the same samples, in turn; who goes first
    rotates with every sample, so that the machine's state affects all alike.
    The first ``warmup`` samples are stepped but not timed."""
    names = list(trainers)
    times = {name: [] for name in names}
    for i, sample in enumerate(samples):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            t = timed_step(trainers[name], sample)
            if i >= warmup:
                times[name].append(t)
    return times


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


def peak_memory(run) -> dict:
    """Peak memory of ``run()`` (which builds and trains a model), counted from before
    it started: CUDA max allocated, or on the CPU the sampled peak RSS."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        params = run()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - base, "kind": "cuda max allocated", "params": params}
    sampler = RSSPeak()
    base = sampler.peak
    sampler.start()
    params = run()
    sampler.running = False
    sampler.join()
    return {"peak_bytes": sampler.peak - base, "kind": "peak RSS above start", "params": params}


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"


def benchmark_parser(doc: str, steps: int, models) -> argparse.ArgumentParser:
    """Options every benchmark takes; ``--memory-of`` is the per-model child process."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--fp16", action="store_true", help="GPU only")
    parser.add_argument("--bf16", action="store_true", help="GPU only")
    parser.add_argument("--data", default="", help="a fairseq-preprocess'ed directory (default: generated)")
    parser.add_argument("--memory-of", choices=sorted(models), help=argparse.SUPPRESS)
    return parser


def print_memory_of(build_model, steps: int, batch_size: int) -> None:
    """In the per-model process: build, train ``steps`` steps, print peak memory as JSON."""

    def run():
        trainer, task = build_model()
        for sample in batches(task, steps, batch_size):
            trainer.train_step([sample])
        return sum(p.numel() for p in trainer.model.parameters())

    print(json.dumps(peak_memory(run)))


def memory_per_model(script: str, models, data: str, args, *extra: str) -> dict:
    """Peak memory of each model, each measured in a fresh process running ``script``."""
    mem = {}
    for name in models:
        cmd = [sys.executable, script, "--memory-of", name, "--data", data, "--size", args.size,
               "--warmup", str(args.warmup), *extra]
        cmd += ["--fp16"] * args.fp16 + ["--bf16"] * args.bf16
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        mem[name] = json.loads(out.stdout.strip().splitlines()[-1])
    return mem
