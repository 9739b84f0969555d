"""Re-ranking the top: what a search returns is its first child, so the top K
children by shared-weight score are each trained briefly from their inherited
weights, and the search picks the one with the lowest validation loss after
that training (``search --rerank K``).

Each candidate is exported from the super-net (its operators, embeddings and LM
head, as ``export`` writes a ``magic_child``) and trained by ``fairseq-train``
with fairseq's ``masked_lm`` task, restored from that export with a fresh
optimizer and schedule:

    fairseq-train DATA --task masked_lm --criterion masked_lm --arch magic_child \\
        --restore-file OUT/rerank/rankI/inherited.pt --reset-optimizer --reset-dataloader \\
        --reset-meters --reset-lr-scheduler --max-update N ... (--rerank-args)

Its score is the best validation loss fairseq records (bits). Every candidate
trains with the same options and seed on the same data, so the comparison is
paired. Logs: ``OUT/rerank/rankI/train.log``.
"""

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, List, Sequence

from ..checkpoint import torch_load
from ..errors import MagicError
from ..space import Child
from .export import read_source, write_fairseq

PLUGIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package: fairseq_magic/


@dataclass
class Reranked:
    child: Child
    shared_loss: float  # the search's shared-weight score (bits)
    trained_loss: float  # the best validation loss after the brief training (bits)


def default_args(cfg: dict, updates: int, cpu: bool) -> List[str]:
    """The brief training's options: the super-net's sequence length and batch size, Adam at a small constant
    learning rate after a short warm-up, ``updates`` updates, a validation at the end."""
    task, dataset = cfg.get("task") or {}, cfg.get("dataset") or {}
    args = ["--tokens-per-sample", str(task.get("tokens_per_sample") or 512),
            "--batch-size", str(dataset.get("batch_size") or 16),
            "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "1e-4", "--weight-decay", "0.01",
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(max(1, updates // 10)),
            "--max-update", str(updates), "--validate-interval-updates", str(updates),
            "--num-workers", "0", "--no-epoch-checkpoints", "--no-last-checkpoints", "--log-format", "simple",
            "--log-interval", str(max(1, updates // 4)), "--seed", "1"]
    return args + (["--cpu"] if cpu else [])


def training_options(text: str) -> List[str]:
    """``--rerank-args`` as a list of options (MagicError for a line the shell could not split)."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise MagicError(f"--rerank-args: {e}") from None


def rerank(checkpoints: Sequence[str], children: Sequence[Child], shared_losses: Sequence[float], data: str,
           out_dir: str, updates: int = 200, extra_args: Sequence[str] = (), cpu: bool = False,
           log: Callable[[str], None] = print) -> List[Reranked]:
    """Train each of ``children`` (the search's top K, best first) for ``updates`` updates from the weights it
    inherits from its super-net (``checkpoints``: one per child; they differ for few-shot sub-super-nets); the
    results in the order given. ``extra_args`` (fairseq-train options) come last and so override the defaults."""
    cfg = torch_load(checkpoints[0]).get("cfg") or {}
    data = data or str((cfg.get("task") or {}).get("data") or "")
    if not os.path.isfile(os.path.join(data.split(os.pathsep)[0], "dict.txt")):
        raise MagicError(f"--rerank trains on the super-net's data, and '{data}' has no dict.txt (give --data)")
    results = []
    for rank, (checkpoint, child, shared) in enumerate(zip(checkpoints, children, shared_losses), 1):
        folder = os.path.join(out_dir, "rerank", f"rank{rank}")
        os.makedirs(folder, exist_ok=True)
        inherited = os.path.join(folder, "inherited.pt")
        write_fairseq(read_source(checkpoint, child), inherited, "magic_child", "")
        cmd = [sys.executable, "-m", "fairseq_cli.train", data, "--user-dir", PLUGIN, "--task", "masked_lm",
               "--criterion", "masked_lm", "--arch", "magic_child", "--restore-file", inherited,
               "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler",
               "--save-dir", folder, *default_args(cfg, updates, cpu), *extra_args]
        with open(os.path.join(folder, "train.log"), "w") as f:
            done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
        best = os.path.join(folder, "checkpoint_best.pt")
        if done.returncode != 0 or not os.path.isfile(best):
            raise MagicError(f"--rerank: training the child ranked {rank} failed; log: "
                             f"{os.path.join(folder, 'train.log')}")
        trained = float(torch_load(best)["extra_state"]["best"])
        os.remove(best)  # the weights are a means; the loss is the result
        results.append(Reranked(tuple(child), float(shared), trained))
        log(f"rerank: child ranked {rank} (shared-weight loss {shared:.4f}) reaches {trained:.4f} after {updates} "
            f"updates")
    return results
