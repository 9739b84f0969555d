"""Shared fixtures: tiny generated data and helpers that run fairseq's real CLI."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from fairseq_magic.data.corpus import synthetic_corpus

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = str(ROOT / "fairseq_magic")

# A super-net small enough that a fairseq-train run takes seconds on 2 cores.
TINY = [
    "--arch", "magic_supernet_tiny", "--supernet-layers", "6",
    "--candidate-ops", "MHA2,FFN,CONV3,CONV5",
    "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
    "--tokens-per-sample", "32", "--batch-size", "8",
]
COMMON = [
    "--user-dir", PLUGIN, "--task", "magic_masked_lm", "--criterion", "magic_mlm",
    "--optimizer", "adam", "--lr", "1e-3", "--weight-decay", "0.01", "--seed", "3",
    "--cpu", "--num-workers", "0", "--log-format", "json", "--log-interval", "1",
    "--no-progress-bar",
]


@pytest.fixture(scope="session")
def data_bin(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("data")
    synthetic_corpus(str(root / "train.txt"), 600, seed=0)
    synthetic_corpus(str(root / "valid.txt"), 60, seed=1)
    run([
        sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
        "--trainpref", str(root / "train.txt"), "--validpref", str(root / "valid.txt"),
        "--destdir", str(root / "bin"), "--workers", "1",
    ])
    return str(root / "bin")


@pytest.fixture(scope="session")
def spm_data(tmp_path_factory) -> dict:
    """Tiny data through the demo's own steps: corpus split, sentencepiece, preprocess."""
    root = tmp_path_factory.mktemp("spm")
    synthetic_corpus(str(root / "raw.txt"), 700, seed=4)
    magic = [sys.executable, "-m", "fairseq_magic.cli"]
    run(magic + ["corpus", "--out", str(root / "text"), "--corpus", str(root / "raw.txt")])
    run(magic + ["spm", "--data", str(root / "text"), "--out", str(root / "spm"), "--vocab-size", "120"])
    run([
        sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
        "--trainpref", str(root / "spm" / "train.spm"), "--validpref", str(root / "spm" / "valid.spm"),
        "--destdir", str(root / "bin"), "--workers", "1",
    ])
    return {"bin": str(root / "bin"), "spm": str(root / "spm" / "spm.model"), "text": str(root / "text")}


@pytest.fixture(scope="session")
def supernet(data_bin, tmp_path_factory) -> str:
    """A briefly trained super-net checkpoint (factorised embeddings)."""
    save = tmp_path_factory.mktemp("supernet")
    fairseq_train(data_bin, str(save), "--max-update", "6", "--embed-factor-dim", "16")
    return str(save / "checkpoint_last.pt")


@pytest.fixture(scope="session")
def plain_supernet(spm_data, tmp_path_factory) -> str:
    """A super-net with sentencepiece data and unfactorised embeddings, of MHA and FFN layers."""
    save = tmp_path_factory.mktemp("plain")
    fairseq_train(spm_data["bin"], str(save), "--max-update", "4", "--candidate-ops", "MHA2,MHA4,FFN,FFN32,CONV3",
                  "--embed-factor-dim", "0")
    return str(save / "checkpoint_last.pt")


PLAIN_CHILD = "MHA4,FFN,MHA4,FFN,MHA4,FFN"


def own_labelled_data(folder: Path, sentences: List[str]) -> Dict[str, int]:
    """A user's own binary set in SST-2's layout whose majority label is '1' (a sentence with
    a low token number is '1'): fairseq-preprocess would order its labels 1, 0."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"0": 0, "1": 0}
    for split, rows in (("train", sentences[:160]), ("dev", sentences[160:220])):
        lines = ["sentence\tlabel"]
        for sentence in rows:
            label = "1" if any(f"tok{i} " in sentence + " " for i in range(25)) else "0"
            counts[label] += split == "train"
            lines.append(f"{sentence}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts


@pytest.fixture(scope="session")
def finetuned(plain_supernet, spm_data, tmp_path_factory) -> dict:
    """A user's second day: a plain child exported with its sentencepiece model, a labelled set of
    their own prepared with glue-prep, fine-tuned with fairseq's sentence_prediction."""
    root = tmp_path_factory.mktemp("second_day")
    magic("export", "--checkpoint", plain_supernet, "--arch", PLAIN_CHILD, "--out", str(root / "child" / "model.pt"),
          "--sentencepiece-model", spm_data["spm"])
    sentences = [s.strip() for s in open(f"{spm_data['text']}/train.txt", encoding="utf-8") if s.strip()]
    counts = own_labelled_data(root / "raw" / "reviews", sentences)
    prep = magic("glue-prep", "--glue-dir", str(root / "raw"), "--tasks", "reviews:SST-2",
                 "--model", str(root / "child"), "--out", str(root / "bin"), "--epochs", "2", "--batch-size", "16")
    data = root / "bin" / "reviews-bin"
    run([sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", PLUGIN, "--restore-file",
         str(root / "child" / "model.pt"), "--reset-optimizer", "--reset-dataloader", "--reset-meters",
         "--arch", "magic_child", "--task", "sentence_prediction", "--criterion", "sentence_prediction",
         "--num-classes", "2", "--max-positions", "32", "--shorten-method", "truncate", "--init-token", "0",
         "--separator-token", "2", "--batch-size", "16", "--optimizer", "adam", "--lr", "3e-3", "--max-update", "12",
         "--cpu", "--num-workers", "0", "--seed", "1", "--no-progress-bar", "--best-checkpoint-metric", "accuracy",
         "--maximize-best-checkpoint-metric", "--save-dir", str(root / "ft")])
    return {"root": root, "child": str(root / "child"), "data": str(data), "ft": str(root / "ft"),
            "counts": counts, "prep": prep.stdout}


def run(cmd: List[str], check: bool = True, env: Dict[str, str] = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def magic(*args: str, check: bool = True, terminal: bool = False) -> subprocess.CompletedProcess:
    """The fairseq-magic command line; ``terminal``: its stderr a terminal (where progress bars are drawn)."""
    if terminal:
        return run_with_terminal([sys.executable, "-m", "fairseq_magic.cli", *args])
    return run([sys.executable, "-m", "fairseq_magic.cli", *args], check=check)


def run_with_terminal(cmd: List[str]) -> subprocess.CompletedProcess:
    """``cmd`` with a pseudo-terminal as its stderr (what a user at a console sees there)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a 160-column console
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, cwd=str(ROOT), text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout = proc.stdout.read()
    proc.wait()
    os.close(master)
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, b"".join(chunks).decode(errors="replace"))
    if proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{result.stderr[-3000:]}")
    return result


def fairseq_train(data: str, save_dir: str, *extra: str, check: bool = True,
                  env: Dict[str, str] = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fairseq_cli.train", data, *COMMON, *TINY, "--save-dir", save_dir, *extra]
    return run(cmd, check=check, env=None if env is None else {**os.environ, **env})


def hydra_train(config_dir, config: str, save_dir, *overrides: str) -> subprocess.CompletedProcess:
    """fairseq-hydra-train of a shipped config on the CPU in float32, the plugin loaded, writing
    under ``save_dir`` only; ``overrides`` scale it down."""
    return run([
        sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", str(config_dir), "--config-name", config,
        f"common.user_dir={PLUGIN}", f"checkpoint.save_dir={save_dir}", f"hydra.run.dir={Path(save_dir) / 'hydra'}",
        "common.cpu=true", "common.fp16=false", *overrides,
    ])


def pretrain(data_bin, save_dir, *extra, check=True):
    """fairseq-train of a magic_child with fairseq's masked_lm task (and the criterion in ``extra``)."""
    return run([
        sys.executable, "-m", "fairseq_cli.train", data_bin, "--user-dir", PLUGIN, "--task", "masked_lm",
        "--arch", "magic_child", "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam",
        "--lr", "1e-3", "--max-update", "3", "--cpu", "--num-workers", "0", "--log-format", "json",
        "--log-interval", "1", "--no-progress-bar", "--seed", "1", "--save-dir", str(save_dir), *extra,
    ], check=check)


def train_log(proc: subprocess.CompletedProcess) -> List[dict]:
    """The per-update training records fairseq logged (json log format)."""
    records = []
    for line in (proc.stdout + proc.stderr).splitlines():
        # fairseq-train: "... | train_inner | {...}"; under hydra: "[...][train_inner][INFO] - {...}"
        if ("| train_inner |" in line or "[train_inner]" in line) and "{" in line:
            records.append(json.loads(line[line.index("{"):]))
    return records


def assert_one_error_line(proc: subprocess.CompletedProcess, message: str) -> None:
    """A failed run ends with one "fairseq-magic: error:" line that says ``message``."""
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fairseq-magic: error:") and message in last, proc.stderr[-2000:]


def read_child_log(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def load_state(path: str) -> dict:
    """Every checkpoint the plugin writes is plain data: it loads with weights_only=True."""
    return torch.load(path, map_location="cpu", weights_only=True)


def gloo_rank_commands(data: str, save_dir: str, world: int, *extra: str) -> List[List[str]]:
    """fairseq-train of the tiny super-net as ``world`` CPU ranks on gloo, each started by hand."""
    port = free_port()
    return [[sys.executable, "-m", "fairseq_cli.train", data, *COMMON, *TINY, "--save-dir", save_dir, *extra,
             "--distributed-world-size", str(world), "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
             "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
             "--distributed-rank", str(rank), "--device-id", "0"] for rank in range(world)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(data_bin, save_dir, log, max_update, world=2, extra=()):
    """Train the tiny super-net as ``world`` gloo ranks (each writing its child log); their output."""
    cmds = gloo_rank_commands(data_bin, save_dir, world, "--max-update", str(max_update), "--child-log", log, *extra)
    procs = [subprocess.Popen(c, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


def build(data_bin, *extra):
    """(cfg, task, model) of the tiny super-net, through fairseq's own option parsing."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [data_bin, *COMMON, *TINY, "--save-dir", "unused", *extra])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return cfg, task, task.build_model(cfg.model)


def batch(model, seed=0, batch_size=3, length=12):
    """Random token ids of the model's dictionary, each row starting with <s>."""
    g = torch.Generator().manual_seed(seed)
    vocab = len(model.encoder.dictionary)
    tokens = torch.randint(4, vocab, (batch_size, length), generator=g)
    tokens[:, 0] = 0  # <s>
    return tokens
