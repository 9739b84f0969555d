"""The prepared GPU check: one command for the few minutes a GPU is lent.

At base size (the paper's BERT space: a 26-layer super-net of {MHA12, FFN,
CONV3, CONV5}, hidden 768, FFN 3072; 128 tokens, batch 32), for fp16 and bf16:

* SPOS, MAGIC-T and MAGIC-AT super-net steps and fairseq's ``roberta_base``
  (12 layers, the plain model of the same width) on the same batches, each
  through fairseq's Trainer as fairseq-train runs it: mean step time, the ratio
  to RoBERTa and to SPOS, peak memory (CUDA max allocated above what was held
  before the model was built), and the masked-LM loss: finite at every update,
  and lower over the last 20 updates than over the first 20;
* search scoring with the SPOS super-net just trained: children per second with
  one forward per child and with shared prefixes, on 50 uniform children and an
  evolution's tenth generation.

Writes the markdown table (device named) to ``--out`` and prints it; exits 1
when a loss is not finite or does not fall (in ``--dry-run``: not finite). Models run one after another, each
freed before the next. About 4 minutes on one H100/H200.

    python benchmarks/gpu_check.py --out gpu_check.md
    python benchmarks/gpu_check.py --dry-run      # tiny, on the CPU, in seconds (the test suite runs it)
"""

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SIZES, batches, build, common_argv, device_name, make_data, supernet_argv, timed  # noqa: E402
from magic_step import ALIGN  # noqa: E402
from search_speed import scoring_inputs  # noqa: E402

METHODS = {
    "roberta_base": None,
    "SPOS": ["--sampler", "uniform"],
    "MAGIC-T": ["--sampler", "gradual", "--gradual-k", "1"],
    "MAGIC-AT": ["--sampler", "gradual", "--gradual-k", "1", *ALIGN, "--anchor-eval-interval", "100"],
}
WINDOW = 20  # updates averaged at the start and at the end of the run: the loss must fall between them


def argv_for(method: str, data: str, size: str, layers: int, precision: list) -> list:
    if method == "roberta_base":
        plain_layers, _, _, heads, _, _ = SIZES[size]
        return common_argv(data, size, precision) + [
            "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta",
            "--encoder-layers", str(plain_layers), "--encoder-attention-heads", str(heads)]
    argv = supernet_argv(data, size, precision) + METHODS[method]
    argv[argv.index("--supernet-layers") + 1] = str(layers)
    if "--align-lambda" in argv and layers <= 4:  # the dry run: align H_2 (H_4 is the final layer's output)
        argv += ["--align-every", "2"]
    return argv


def run_method(argv: list, samples_of, steps: int, warmup: int) -> dict:
    """Build, train ``warmup + steps`` updates on the same batches as every other model, and free it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    trainer, task = build(argv)
    losses, times = [], []
    for i, sample in enumerate(samples_of(task)):
        seconds, out = timed(trainer.train_step, [sample])
        if i >= warmup:
            times.append(seconds)
        losses.append(float(out["loss"]) if out else float("nan"))
    peak = torch.cuda.max_memory_allocated() - held if torch.cuda.is_available() else float("nan")
    result = {"step_ms": 1e3 * statistics.mean(times), "peak_mib": peak / 2**20, "losses": losses,
              "params": sum(p.numel() for p in trainer.model.parameters())}
    return result, trainer, task


def loss_check(losses) -> str:
    if not all(math.isfinite(x) for x in losses):
        return "NOT FINITE"
    window = min(WINDOW, len(losses) // 2)
    first, last = statistics.mean(losses[:window]), statistics.mean(losses[-window:])
    return f"{first:.3f} -> {last:.3f}" + ("" if last < first else " NOT FALLING")


def scoring_rates(trainer, task, children: int, sentences: int, batch_size: int) -> list:
    """Children per second of scoring without and with shared prefixes (search/scoring.py), on uniform
    children and the tenth generation of an evolution."""
    from fairseq_magic.search.scoring import score_children

    model = trainer.model.eval()
    valid, sets = scoring_inputs(model, task, children, sentences, batch_size)
    sets = {"uniform": sets["uniform"], "evolution generation": sets["evolution-10"]}
    rows = []
    for name, kids in sets.items():
        rate = {}
        for shared in (False, True):
            score_children(model, model, kids[:2], valid, shared_prefixes=shared)  # warm-up
            rate[shared] = len(kids) / timed(score_children, model, model, kids, valid, shared)[0]
        rows.append((name, rate[False], rate[True]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.md", help="where the markdown table goes")
    parser.add_argument("--steps", type=int, default=200, help="updates per model and precision")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes, 12 updates, on the CPU in float32: checks that the script runs")
    parser.add_argument("--data", default="", help="a fairseq-preprocess'ed directory (default: generated)")
    args = parser.parse_args()
    started = time.time()
    if args.dry_run:
        size, layers, steps, warmup, precisions, children = "tiny", 4, 12, 2, {"fp32": ["--cpu"]}, 4
    else:
        if not torch.cuda.is_available():
            print("gpu_check: error: no CUDA device (use --dry-run to check the script on a CPU)", file=sys.stderr)
            return 1
        size, layers, steps, warmup, children = "base", 26, args.steps, 5, 50
        precisions = {"fp16": ["--fp16", "--fp16-no-flatten-grads"], "bf16": ["--bf16"]}
    batch_size = SIZES[size][5]
    data = args.data or make_data(tempfile.mkdtemp(prefix="magic-gpu-check-"), 2000)

    cached = {}

    def samples_of(task):  # the same batches for every model: the first model's
        if "samples" not in cached:
            cached["samples"] = batches(task, warmup + steps, batch_size)
        return cached["samples"]

    lines = [f"GPU check on {device_name()}, torch {torch.__version__}; super-nets: {layers} layers of "
             f"{{MHA{SIZES[size][3]}, FFN, CONV3, CONV5}}, hidden {SIZES[size][1]}; roberta_base: "
             f"{SIZES[size][0]} layers; {SIZES[size][4]} tokens x {batch_size} sentences; {steps} updates each "
             f"({warmup} untimed)", "",
             "| precision | model | step (ms) | / roberta_base | / SPOS | peak memory (MiB) | loss first -> last 20 |",
             "|---|---|---:|---:|---:|---:|---|"]
    failed, scoring = [], []
    for precision, flags in precisions.items():
        results = {}
        for method in METHODS:
            result, trainer, task = run_method(argv_for(method, data, size, layers, flags), samples_of, steps, warmup)
            results[method] = result
            check = result["loss"] = loss_check(result["losses"])
            if "NOT FINITE" in check or ("NOT FALLING" in check and not args.dry_run):  # 12 tiny updates may not
                failed.append(f"{precision} {method}: {check}")
            if method == "SPOS" and precision == list(precisions)[-1]:
                scoring = scoring_rates(trainer, task, children, 256 if not args.dry_run else 16, batch_size)
            del trainer, task
            print(f"[gpu_check] {precision} {method}: {result['step_ms']:.1f} ms/step, loss {check} "
                  f"({time.time() - started:.0f} s)", flush=True)
        for method, r in results.items():
            lines.append(f"| {precision} | {method} | {r['step_ms']:.1f} | "
                         f"{r['step_ms'] / results['roberta_base']['step_ms']:.2f} | "
                         + ("" if method == "roberta_base" else f"{r['step_ms'] / results['SPOS']['step_ms']:.2f}")
                         + f" | {r['peak_mib']:.0f} | {r['loss']} |")
    lines += ["", f"Search scoring with the SPOS super-net ({list(precisions)[-1]}), children per second:", "",
              "| children | one forward each | shared prefixes | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {plain:.1f} | {shared:.1f} | {shared / plain:.2f} |" for name, plain, shared in scoring]
    lines += ["", f"{time.time() - started:.0f} s in all" + (f"; FAILED: {'; '.join(failed)}" if failed else "")]
    table = "\n".join(lines)
    with open(args.out, "w") as f:
        f.write(table + "\n")
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
