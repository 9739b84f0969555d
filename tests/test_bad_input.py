"""Every row of the bad-input table (docs/checkpoints-and-bad-input.md), as a user (or an attacker) meets it.

Each case below is named by the id in the table's first column; the first test
checks that the table and the cases agree, so a row cannot go untested.
"""

import datetime
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (COMMON, PLUGIN, ROOT, TINY, assert_one_error_line, fairseq_train, gloo_rank_commands,
                      load_state, magic, pretrain, run, train_log)

ARCH = "MHA2,FFN,CONV3,CONV5,FFN,MHA2"
CASES = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


def run_all(commands: dict) -> dict:
    """Run the commands side by side; their CompletedProcess by name."""
    procs = {k: subprocess.Popen(c, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def readme_rows():
    text = (ROOT / "docs" / "checkpoints-and-bad-input.md").read_text()
    section = re.split(r"\n#{1,3} ", text[text.index("## Bad input"):])[0]
    return re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.M)


def test_the_readme_table_and_the_cases_agree():
    assert sorted(readme_rows()) == sorted(CASES)


@pytest.fixture(scope="module")
def first_run(data_bin, tmp_path_factory) -> bytes:
    """checkpoint_last.pt of a 2-update run, shared by the cases that resume from it."""
    save = tmp_path_factory.mktemp("first_run")
    fairseq_train(data_bin, str(save), "--max-update", "2")
    return (save / "checkpoint_last.pt").read_bytes()


@pytest.fixture
def trained(first_run, tmp_path) -> bytes:
    """A save directory (tmp_path) holding that run's checkpoint_last.pt; its bytes."""
    (tmp_path / "checkpoint_last.pt").write_bytes(first_run)
    return first_run


# ---------------------------------------------------------------------------- checkpoints that run code


class Payload:
    """Unpickling this runs a shell command: here, one that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(tmp_path, good: str, name: str):
    """Two poisoned files: the payload alone, and hidden in a real checkpoint's extra_state."""
    marker = tmp_path / f"{name}-ran"
    alone, hidden = tmp_path / f"{name}-alone.pt", tmp_path / f"{name}-hidden.pt"
    torch.save(Payload(marker), alone)
    state = torch.load(good, map_location="cpu", weights_only=True)
    state["extra_state"]["note"] = Payload(marker)
    torch.save(state, hidden)
    return marker, [alone, hidden]


def entry_points(tmp_path, supernet_payload, child_payload, data_bin):
    """The seven ways a checkpoint is read, each as the command a user types."""
    py = sys.executable
    resume_dir = tmp_path / f"resume-{supernet_payload.stem}"
    resume_dir.mkdir()
    shutil.copy(supernet_payload, resume_dir / "checkpoint_last.pt")
    train = [py, "-m", "fairseq_cli.train", data_bin, *COMMON, *TINY, "--max-update", "8"]
    hub = (f"from fairseq_magic.models.child import MagicChildModel; MagicChildModel.from_pretrained("
           f"'{child_payload.parent}', checkpoint_file='{child_payload.name}', data_name_or_path='{data_bin}', "
           f"user_dir='{PLUGIN}')")
    return {
        "search": [py, "-m", "fairseq_magic.cli", "search", "--checkpoint", str(supernet_payload),
                   "--out", str(tmp_path / "s"), "--data", data_bin],
        "export": [py, "-m", "fairseq_magic.cli", "export", "--checkpoint", str(supernet_payload), "--arch", ARCH,
                   "--out", str(tmp_path / "x.pt")],
        "derive": [py, "-m", "fairseq_magic.cli", "derive", str(supernet_payload), "-o", str(tmp_path / "a.json")],
        "restore-file": [*train, "--save-dir", str(tmp_path / f"r-{supernet_payload.stem}"),
                         "--restore-file", str(supernet_payload)],
        "resume": [*train, "--save-dir", str(resume_dir)],
        "validate": [py, "-m", "fairseq_cli.validate", data_bin, "--path", str(child_payload), "--task", "masked_lm",
                     "--user-dir", PLUGIN, "--cpu", "--batch-size", "8"],
        "from_pretrained": [py, "-c", "import fairseq_magic; " + hub],
    }


@case("code-in-checkpoint")
def code_in_checkpoint(request):
    tmp_path, data_bin, supernet = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "supernet"))
    child = tmp_path / "child" / "model.pt"
    magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", str(child))
    marker, supernets = plant(tmp_path, supernet, "supernet")
    _, children = plant(tmp_path, str(child), "child")
    commands = {f"{entry} ({form})": cmd
                for form, s, c in zip(("alone", "hidden"), supernets, children)
                for entry, cmd in entry_points(tmp_path, s, c, data_bin).items()}
    assert len(commands) == 14
    procs = {k: subprocess.Popen(c, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        last = err.strip().splitlines()[-1]
        assert proc.returncode != 0, name
        assert last.startswith("fairseq-magic: error: refusing to load") and "'posix.system'" in last, (name, err[-2000:])
    assert not marker.exists()
    assert not (tmp_path / "r-supernet-alone" / "checkpoint_last.pt").exists()


def test_a_trusted_checkpoint_loads_with_the_opt_in(supernet, tmp_path):
    """A checkpoint that needs a class outside the allow-list: refused, then loaded when the user opts in."""
    state = torch.load(supernet, map_location="cpu", weights_only=True)
    state["extra_state"]["when"] = datetime.date(2026, 1, 1)
    odd = tmp_path / "odd.pt"
    torch.save(state, odd)
    args = ("rank", "sample", "--checkpoint", str(odd), "--out", str(tmp_path / "c"), "--children", "2")
    refused = magic(*args, check=False)
    assert_one_error_line(refused, "unpickling it would call 'datetime.date'")
    assert "--unsafe-load-checkpoint" in refused.stderr.splitlines()[-1]
    magic(*args, "--unsafe-load-checkpoint")
    assert len(list((tmp_path / "c").glob("child0*.json"))) == 2
    env = dict(os.environ, FAIRSEQ_MAGIC_UNSAFE_LOAD="1")
    proc = run([sys.executable, "-m", "fairseq_magic.cli", *args[:-2], "--children", "3"], env=env)
    assert proc.returncode == 0 and len(list((tmp_path / "c").glob("child0*.json"))) == 3


# ---------------------------------------------------------------------------- checkpoints that are not ours or not there


@case("missing-checkpoint")
def missing_checkpoint(request):
    tmp_path = request.getfixturevalue("tmp_path")
    proc = magic("export", "--checkpoint", str(tmp_path / "none.pt"), "--arch", ARCH, "--out", str(tmp_path / "x.pt"),
                 check=False)
    assert_one_error_line(proc, f"checkpoint not found: {tmp_path / 'none.pt'}")


@case("not-a-checkpoint")
def not_a_checkpoint(request):
    """Garbage, a pickled number and a dict without fairseq's entries, to a command or as --restore-file."""
    tmp_path, data_bin = request.getfixturevalue("tmp_path"), request.getfixturevalue("data_bin")
    good = request.getfixturevalue("trained")
    (tmp_path / "garbage.pt").write_bytes(b"\x00this is not a checkpoint")
    torch.save(5, tmp_path / "five.pt")
    torch.save({"model": {}}, tmp_path / "bare.pt")
    py = sys.executable
    cli = [py, "-m", "fairseq_magic.cli"]
    procs = run_all({
        "export garbage": [*cli, "export", "--checkpoint", str(tmp_path / "garbage.pt"), "--arch", ARCH,
                           "--out", str(tmp_path / "x.pt")],
        "search five": [*cli, "search", "--checkpoint", str(tmp_path / "five.pt"), "--out", str(tmp_path / "s")],
        "validate five": [py, "-m", "fairseq_cli.validate", data_bin, "--path", str(tmp_path / "five.pt"),
                          "--task", "masked_lm", "--user-dir", PLUGIN, "--cpu", "--batch-size", "8"],
        "export bare": [*cli, "export", "--checkpoint", str(tmp_path / "bare.pt"), "--arch", ARCH,
                        "--out", str(tmp_path / "x.pt")],
    })
    assert_one_error_line(procs["export garbage"], "cannot read checkpoint")
    assert_one_error_line(procs["search five"], "five.pt is not a fairseq checkpoint (TypeError")
    assert_one_error_line(procs["validate five"], "five.pt is not a fairseq checkpoint (TypeError")
    assert_one_error_line(procs["export bare"], "bare.pt is not a fairseq checkpoint (KeyError")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "s").exists()
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "4", "--restore-file", str(tmp_path / "garbage.pt"),
                         check=False)
    assert_one_error_line(proc, "cannot read checkpoint")
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == good


@case("foreign-checkpoint")
def foreign_checkpoint(request):
    """A plain fairseq RoBERTa checkpoint (its config is an argparse.Namespace) and an exported child."""
    tmp_path, data_bin, supernet = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "supernet"))
    run([sys.executable, "-m", "fairseq_cli.train", data_bin, "--task", "masked_lm", "--criterion", "masked_lm",
         "--arch", "roberta", "--encoder-layers", "1", "--encoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
         "--encoder-attention-heads", "2", "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam",
         "--lr", "1e-3", "--max-update", "1", "--cpu", "--num-workers", "0", "--no-progress-bar",
         "--save-dir", str(tmp_path / "roberta")])
    roberta = str(tmp_path / "roberta" / "checkpoint_last.pt")
    child = str(tmp_path / "child.pt")
    magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", child)
    commands = [(roberta, "roberta", args) for args in (
        ["search", "--checkpoint", roberta, "--out", str(tmp_path / "s"), "--data", data_bin],
        ["derive", roberta, "-o", str(tmp_path / "a.json")],
        ["rank", "sample", "--checkpoint", roberta, "--out", str(tmp_path / "c")],
    )] + [(child, "magic_child", ["search", "--checkpoint", child, "--out", str(tmp_path / "s"), "--data", data_bin])]
    for path, model, args in commands:
        proc = magic(*args, check=False)
        assert_one_error_line(proc, f"is not a fairseq-magic super-net checkpoint (its model is '{model}')")
    # export takes a child checkpoint too (retrained, fine-tuned), but not a foreign model or another child
    proc = magic("export", "--checkpoint", roberta, "--arch", ARCH, "--out", str(tmp_path / "x.pt"), check=False)
    assert_one_error_line(proc, "is not a fairseq-magic super-net or magic_child checkpoint (its model is 'roberta')")
    proc = magic("export", "--checkpoint", child, "--arch", "MHA2,FFN,FFN,FFN,FFN,MHA2", "--out", str(tmp_path / "x.pt"),
                 check=False)
    assert_one_error_line(proc, f"{child} holds the child {ARCH}; leave --arch out to export it")
    assert not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------------------------- resume and save


@case("missing-restore-file")
def missing_restore_file(request):
    tmp_path, data_bin, good = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "trained"))
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "4", "--restore-file", str(tmp_path / "typo.pt"),
                         check=False)
    assert_one_error_line(proc, f"--restore-file not found: {tmp_path / 'typo.pt'}")
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == good


@case("restore-file-not-a-checkpoint")
def restore_file_not_a_checkpoint(request):
    """A folder, an empty file or a foreign file as --restore-file: nothing trained, nothing overwritten."""
    tmp_path, data_bin, good = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "trained"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"weights": [1, 2]}, tmp_path / "foreign.pt")
    train = [sys.executable, "-m", "fairseq_cli.train", data_bin, *COMMON, *TINY, "--save-dir", str(tmp_path),
             "--max-update", "4", "--restore-file"]
    procs = run_all({name: [*train, str(tmp_path / name)] for name in ("folder", "empty.pt", "foreign.pt")})
    assert_one_error_line(procs["folder"], f"--restore-file: {tmp_path / 'folder'} is a folder, not a checkpoint file")
    assert_one_error_line(procs["empty.pt"], "the file is empty (nothing was trained or written)")
    assert_one_error_line(procs["foreign.pt"], f"--restore-file {tmp_path / 'foreign.pt'} is not a fairseq checkpoint")
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == good
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_last.pt", "empty.pt", "foreign.pt"]


@case("cut-short-last-checkpoint")
def cut_short_last_checkpoint(request):
    """checkpoint_last.pt cut short, the folder copied with cp -r (file times reset), an older
    checkpoint_best.pt touched last and a .tmp left by a kill: the resume continues from the
    checkpoint that records the most updates, and the .tmp is removed."""
    tmp_path, data_bin = request.getfixturevalue("tmp_path"), request.getfixturevalue("data_bin")
    first, copy = tmp_path / "first", tmp_path / "copy"
    fairseq_train(data_bin, str(first), "--max-update", "6", "--save-interval-updates", "2",
                  "--keep-interval-updates", "3", "--no-epoch-checkpoints")
    last = first / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    shutil.copyfile(first / "checkpoint_1_2.pt", first / "checkpoint_best.pt")  # the best, from update 2
    subprocess.run(["cp", "-r", str(first), str(copy)], check=True)
    time.sleep(0.01)
    (copy / "checkpoint_best.pt").touch()  # the newest file, the oldest update
    (copy / "checkpoint_1_8.pt.tmp").write_bytes(b"left by a kill")
    proc = fairseq_train(data_bin, str(copy), "--max-update", "8", "--save-interval-updates", "2",
                         "--keep-interval-updates", "3", "--no-epoch-checkpoints")
    warnings = [line for line in proc.stdout.splitlines() if "resuming from" in line]
    assert len(warnings) == 1 and "checkpoint_last.pt is unreadable" in warnings[0], proc.stdout[-3000:]
    assert f"resuming from {copy / 'checkpoint_1_6.pt'} (update 6)" in warnings[0]
    assert [r["num_updates"] for r in train_log(proc)] == ["7", "8"]
    assert not list(copy.glob("*.tmp")) and "removed" in proc.stdout


def test_checkpoint_copies_are_atomic(supernet, tmp_path):
    """checkpoint_last.pt is made by a copy into a temporary file and a rename: a failed copy leaves the old one."""
    from fairseq import checkpoint_utils

    import fairseq_magic  # noqa: F401  (installs the plugin's checkpoint handling)
    from fairseq_magic.errors import MagicError

    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(b"the previous checkpoint")
    with pytest.raises(MagicError, match="cannot save checkpoint"):
        checkpoint_utils.PathManager.copy(str(tmp_path / "missing.pt"), str(last), overwrite=True)
    assert last.read_bytes() == b"the previous checkpoint" and not list(tmp_path.glob("*.tmp"))
    assert checkpoint_utils.PathManager.copy(supernet, str(last), overwrite=True)
    assert last.read_bytes() == open(supernet, "rb").read()


def test_a_full_disk_is_named_whatever_torch_reports(tmp_path, monkeypatch):
    """torch's archive writer reports a full disk as "unexpected pos"; the line says what happened."""
    from fairseq import checkpoint_utils

    import fairseq_magic  # noqa: F401  (installs the plugin's checkpoint handling)
    from fairseq_magic.errors import MagicError

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(b"the previous checkpoint")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(MagicError, match=r"cannot save checkpoint .*: the disk is full or a file-size limit was hit "
                                         r"\(torch: unexpected pos 64 vs 0\)"):
        checkpoint_utils.torch_persistent_save({"model": {}}, str(last))
    assert last.read_bytes() == b"the previous checkpoint" and not list(tmp_path.glob("*.tmp"))


@case("disk-full")
def disk_full(request):
    """A save that cannot be written (here: a file-size limit, as a full disk): one line, no .tmp, the old file kept."""
    tmp_path, data_bin, good = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "trained"))

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    cmd = [sys.executable, "-m", "fairseq_cli.train", data_bin, *COMMON, *TINY, "--save-dir", str(tmp_path),
           "--max-update", "4"]
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, preexec_fn=small_files)
    assert_one_error_line(proc, "cannot save checkpoint")
    assert "the disk is full or a file-size limit was hit" in proc.stderr.splitlines()[-1]
    assert proc.stderr.count("Traceback") == 0, proc.stderr[-3000:]
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == good


# ---------------------------------------------------------------------------- architectures, data, options


@case("malformed-architecture-file")
def malformed_architecture_file(request):
    tmp_path, data_bin, supernet = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "supernet"))
    space = {"num_layers": 6, "candidates": ["MHA2", "FFN", "CONV3", "CONV5"], "hidden_dim": 32, "ffn_dim": 64}
    files = {
        "arch is not a string": ({"arch": [0, 1], "space": space}, "'arch' must be a string"),
        "space is not an object": ({"arch": ARCH, "space": "6 layers"}, "expected an object, got str"),
        "num_layers is not an integer": ({"arch": ARCH, "space": dict(space, num_layers="six")},
                                         "'num_layers' must be an integer, got 'six'"),
    }
    for name, (record, message) in files.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(json.dumps(record))
        proc = magic("export", "--checkpoint", supernet, "--arch", str(path), "--out", str(tmp_path / "x.pt"),
                     check=False)
        assert_one_error_line(proc, message)
    proc = fairseq_train(data_bin, str(tmp_path / "t"), "--max-update", "2", "--align-lambda", "0.5",
                         "--anchor-arch", str(path), check=False)  # the last file, through training
    assert_one_error_line(proc, message)
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "t" / "checkpoint_last.pt").exists()


def _keeps_checkpoint(request, extra, message):
    tmp_path, data_bin, good = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "trained"))
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "4", *extra, check=False)
    assert_one_error_line(proc, message)
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == good


@case("unknown-operator")
def unknown_operator(request):
    _keeps_checkpoint(request, ["--candidate-ops", "MHA2,BOGUS"], "unknown operator 'BOGUS'")


@case("child-outside-the-space")
def child_outside_the_space(request):
    _keeps_checkpoint(request, ["--child-arch", "MHA2,FFN"], "architecture has 2 layers, the space has 6")
    folder = request.getfixturevalue("tmp_path")
    _keeps_checkpoint(request, ["--child-arch", str(folder)], f"{folder} is a folder, not an architecture file")
    _keeps_checkpoint(request, ["--child-arch", "MHA2,FFN,FFN,FFN,FFN,CONV7"], "layer 5: operator 'CONV7' is not a candidate")


@case("unknown-sampler")
def unknown_sampler(request):
    _keeps_checkpoint(request, ["--sampler", "nonsense"], "unknown sampler 'nonsense'")


@case("gradual-k-without-gradual")
def gradual_k_without_gradual(request):
    _keeps_checkpoint(request, ["--sampler", "uniform", "--gradual-k", "2"], "--gradual-k is MAGIC-T's")


@case("half-precision-on-cpu")
def half_precision_on_cpu(request):
    # COMMON trains with --cpu, as a machine without a GPU must
    _keeps_checkpoint(request, ["--fp16"], "--fp16 needs a GPU and this run has none")
    _keeps_checkpoint(request, ["--bf16"], "--bf16 needs a GPU and this run has none")
    # the paper's hydra configs (fp16 on): one line before the 26-layer model is built, no hydra block around it
    tmp_path, data_bin = request.getfixturevalue("tmp_path"), request.getfixturevalue("data_bin")
    proc = run([sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", str(ROOT / "examples" / "config"),
                "--config-name", "spos", f"task.data={data_bin}", f"common.user_dir={PLUGIN}",
                f"checkpoint.save_dir={tmp_path / 'hydra'}", f"hydra.run.dir={tmp_path / 'hydra'}", "common.cpu=true"],
               check=False)
    assert_one_error_line(proc, "--fp16 needs a GPU and this run has none")
    assert "Error executing job" not in proc.stderr and "Traceback" not in proc.stderr
    assert "MagicSupernetModel(" not in proc.stdout and "num. shared model params" not in proc.stdout  # not built
    assert not list((tmp_path / "hydra").glob("checkpoint*.pt"))


@case("missing-data")
def missing_data(request):
    tmp_path = request.getfixturevalue("tmp_path")
    proc = fairseq_train(str(tmp_path / "nowhere"), str(tmp_path), check=False)
    assert_one_error_line(proc, "no dict.txt in data directory")


@case("empty-corpus")
def empty_corpus(request):
    tmp_path = request.getfixturevalue("tmp_path")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "valid.txt").write_text("a b c d\ne f g h\n")
    assert_one_error_line(magic("corpus", "--corpus", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "text"),
                                check=False), "corpus too small: 0 lines")
    run([sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref", str(tmp_path / "empty.txt"),
         "--validpref", str(tmp_path / "valid.txt"), "--destdir", str(tmp_path / "bin"), "--workers", "1"])
    proc = fairseq_train(str(tmp_path / "bin"), str(tmp_path / "ckpt"), "--max-update", "2", check=False)
    assert_one_error_line(proc, "the 'train' split is empty")
    assert "Traceback" not in proc.stderr


@case("impossible-limits")
def impossible_limits(request):
    tmp_path, supernet = request.getfixturevalue("tmp_path"), request.getfixturevalue("supernet")
    proc = magic("search", "--checkpoint", supernet, "--out", str(tmp_path), "--max-params", "1000", check=False)
    assert_one_error_line(proc, "no child can meet the parameter limits")


@case("child-arch-contradicts-checkpoint")
def child_arch_contradicts_checkpoint(request):
    tmp_path, supernet, data_bin = (request.getfixturevalue(f) for f in ("tmp_path", "supernet", "data_bin"))
    magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", str(tmp_path / "child" / "model.pt"))
    retrain = [sys.executable, "-m", "fairseq_cli.train", data_bin, "--user-dir", PLUGIN, "--task", "masked_lm",
               "--criterion", "masked_lm", "--arch", "magic_child", "--restore-file", str(tmp_path / "child" / "model.pt"),
               "--reset-optimizer", "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3",
               "--max-update", "1", "--cpu", "--num-workers", "0", "--save-dir", str(tmp_path / "save")]
    assert_one_error_line(run(retrain + ["--child-arch", "FFN,FFN,FFN,FFN,FFN,FFN"], check=False),
                          f"--child-arch FFN,FFN,FFN,FFN,FFN,FFN (checkpoint: {ARCH})")
    assert_one_error_line(run(retrain + ["--child-arch", ARCH, "--encoder-embed-dim", "768"], check=False),
                          "encoder_embed_dim 768 (checkpoint: 32)")
    assert not list(tmp_path.glob("save/*.pt"))


@case("not-a-plain-transformer")
def not_a_plain_transformer(request):
    tmp_path, supernet = request.getfixturevalue("tmp_path"), request.getfixturevalue("supernet")
    proc = magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", str(tmp_path / "model.pt"),
                 "--format", "roberta", check=False)
    assert_one_error_line(proc, f"{ARCH} is not a plain Transformer, so it cannot be a roberta checkpoint: "
                                "layer 2 is CONV3, not MHA")
    assert not (tmp_path / "model.pt").exists()


@case("glue-layout")
def glue_layout(request):
    tmp_path, spm_data = request.getfixturevalue("tmp_path"), request.getfixturevalue("spm_data")
    (tmp_path / "glue" / "MNLI").mkdir(parents=True)
    for split in ("train", "dev_matched", "dev_mismatched"):  # RTE's four columns where MNLI has twelve
        (tmp_path / "glue" / "MNLI" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tneutral\n")
    common = ["--glue-dir", str(tmp_path / "glue"), "--out", str(tmp_path / "out"), "--spm", spm_data["spm"],
              "--dict", os.path.join(spm_data["bin"], "dict.txt")]
    assert_one_error_line(magic("glue-prep", *common, check=False), "has no row with the task's 12 columns")
    assert_one_error_line(magic("glue-prep", *common, "--tasks", "SQuAD", check=False), "unknown GLUE task 'SQuAD'")


@case("distillation-teacher")
def distillation_teacher(request):
    tmp_path, supernet, data_bin, spm_data = (request.getfixturevalue(f) for f in ("tmp_path", "supernet", "data_bin",
                                                                                    "spm_data"))
    teacher = str(tmp_path / "teacher" / "model.pt")
    magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", teacher)
    base = ["--criterion", "masked_lm_kd", "--child-arch", "MHA2,FFN", "--encoder-embed-dim", "16"]
    proc = pretrain(data_bin, tmp_path / "a", *base, "--kd-teacher", teacher, "--kd-temperature", "0", check=False)
    assert_one_error_line(proc, "--kd-temperature must be > 0, got 0.0")
    assert_one_error_line(pretrain(data_bin, tmp_path / "b", *base, check=False), "knowledge distillation needs --kd-teacher")
    proc = pretrain(spm_data["bin"], tmp_path / "c", *base, "--kd-teacher", teacher, check=False)  # other dictionary
    assert_one_error_line(proc, "the teacher's dictionary")
    assert not list(tmp_path.glob("*/checkpoint*.pt"))


@case("electra-setup")
def electra_setup(request):
    tmp_path, data_bin = request.getfixturevalue("tmp_path"), request.getfixturevalue("data_bin")
    common = [sys.executable, "-m", "fairseq_cli.train", data_bin, "--user-dir", PLUGIN, "--task", "magic_electra",
              "--criterion", "magic_electra", "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam",
              "--lr", "1e-3", "--max-update", "1", "--cpu", "--num-workers", "0", "--save-dir", str(tmp_path)]
    proc = run(common + ["--arch", "magic_child", "--child-arch", "MHA2,FFN", "--encoder-embed-dim", "32",
                         "--generator-fraction", "1.5"], check=False)
    assert_one_error_line(proc, "--generator-fraction must be in (0, 1], got 1.5")
    proc = run(common + ["--arch", "magic_supernet_tiny"], check=False)
    assert_one_error_line(proc, "--task magic_electra trains a magic_child discriminator")
    child = tmp_path / "child" / "model.pt"
    magic("export", "--checkpoint", request.getfixturevalue("supernet"), "--arch", ARCH, "--out", str(child))
    proc = run(common + ["--arch", "magic_child", "--restore-file", str(child)], check=False)  # no generator in it
    assert_one_error_line(proc, f"{child} holds no criterion weights, which --criterion magic_electra restores")
    assert not list(tmp_path.glob("*.pt"))


@case("out-of-range-option")
def out_of_range_option(request):
    """Values outside an option's declared range (tests/test_ranges.py walks every option)."""
    tmp_path, data_bin, good = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "trained"))
    supernet = request.getfixturevalue("supernet")
    train = [sys.executable, "-m", "fairseq_cli.train", data_bin, *COMMON, *TINY, "--save-dir", str(tmp_path),
             "--max-update", "4"]
    cli = [sys.executable, "-m", "fairseq_magic.cli"]
    procs = run_all({
        "lambda": [*train, "--align-lambda=-1"],
        "top-p": [*train, "--anchor-top-p", "150"],
        "seq-len": [*cli, "search", "--checkpoint", supernet, "--out", str(tmp_path / "s"), "--seq-len", "0"],
        "population": [*cli, "search", "--checkpoint", supernet, "--out", str(tmp_path / "s"), "--population", "0"],
    })
    assert_one_error_line(procs["lambda"], "--align-lambda must be >= 0, got -1.0")
    assert_one_error_line(procs["top-p"], "--anchor-top-p must be in (0, 100], got 150.0")
    assert_one_error_line(procs["seq-len"], "argument --seq-len: must be >= 1, got 0 (see fairseq-magic search --help)")
    assert_one_error_line(procs["population"], "argument --population: must be >= 1, got 0")
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == good and not (tmp_path / "s").exists()


@case("dictionary-mismatch")
def dictionary_mismatch(request):
    """A data folder whose dict.txt is not the checkpoint's, through every way a checkpoint meets data."""
    tmp_path, data_bin, supernet = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "supernet"))
    other = tmp_path / "other"
    shutil.copytree(data_bin, other)
    with open(other / "dict.txt", "a") as f:
        f.write("".join(f"extra{i} 1\n" for i in range(5)))
    child = tmp_path / "child" / "model.pt"
    magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", str(child))
    py = sys.executable
    cli = [py, "-m", "fairseq_magic.cli"]
    train = [py, "-m", "fairseq_cli.train", str(other), "--cpu", "--num-workers", "0", "--user-dir", PLUGIN,
             "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8", "--tokens-per-sample", "32", "--max-update", "2"]
    procs = run_all({
        supernet: [*cli, "search", "--checkpoint", supernet, "--data", str(other), "--out", str(tmp_path / "s")],
        "interference": [*cli, "interference", "--checkpoint", supernet, "--data", str(other),
                         "--out", str(tmp_path / "i")],
        str(child): [py, "-m", "fairseq_cli.validate", str(other), "--path", str(child), "--task", "masked_lm",
                     "--user-dir", PLUGIN, "--cpu", "--batch-size", "8"],
        "restore supernet": [*train, "--task", "magic_masked_lm", "--criterion", "magic_mlm", *TINY[:6],
                             "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--embed-factor-dim", "16",
                             "--save-dir", str(tmp_path / "r1"), "--restore-file", supernet],
        "restore child": [*train, "--task", "masked_lm", "--arch", "magic_child", "--reset-optimizer",
                          "--save-dir", str(tmp_path / "r2"), "--restore-file", str(child)],
    })
    for name, proc in procs.items():
        checkpoint = {"interference": supernet, "restore supernet": supernet, "restore child": str(child)}.get(name, name)
        assert_one_error_line(proc, f"{checkpoint} has a dictionary of 65 symbols, the data's {other / 'dict.txt'} "
                                    "has 70: use the data the model was trained on")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name in ("s", "i", "r1", "r2")]


@case("command-arguments")
def command_arguments(request):
    """Paths and lists a subcommand cannot use."""
    tmp_path, supernet = request.getfixturevalue("tmp_path"), request.getfixturevalue("supernet")
    (tmp_path / "a-file").write_text("")
    cli = [sys.executable, "-m", "fairseq_magic.cli"]
    procs = run_all({
        "search": [*cli, "search", "--checkpoint", supernet, "--out", str(tmp_path / "a-file")],
        "export": [*cli, "export", "--checkpoint", supernet, "--arch", ARCH, "--out", str(tmp_path)],
        "layers": [*cli, "interference", "--checkpoint", supernet, "--out", str(tmp_path / "i"), "--layers", ""],
        "list": [*cli, "rank", "sample", "--checkpoint", supernet, "--out", str(tmp_path / "c"),
                 "--list", str(tmp_path / "none.txt")],
    })
    assert_one_error_line(procs["search"], f"--out {tmp_path / 'a-file'} is a file; this command writes a folder there")
    assert_one_error_line(procs["export"], f"--out {tmp_path} is a folder; this command writes a file there")
    assert_one_error_line(procs["layers"], "--layers must list layer numbers (0-based), comma-separated")
    assert_one_error_line(procs["list"], f"--list file not found: {tmp_path / 'none.txt'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@case("wrong-encoding")
def wrong_encoding(request):
    """Text in another encoding: a GLUE TSV, a corpus, an architecture file."""
    tmp_path, spm_data, supernet = (request.getfixturevalue(f) for f in ("tmp_path", "spm_data", "supernet"))
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    for split in ("train", "dev"):
        (tmp_path / "glue" / "RTE" / f"{split}.tsv").write_bytes(
            b"index\tsentence1\tsentence2\tlabel\n0\tna\xefve caf\xe9\tb\tentailment\n")  # Latin-1
    (tmp_path / "corpus.txt").write_bytes(b"a line\n\xff\xfe not UTF-8\n")
    (tmp_path / "arch.json").write_bytes(b'{"arch": "\xff"}')
    cli = [sys.executable, "-m", "fairseq_magic.cli"]
    procs = run_all({
        "glue": [*cli, "glue-prep", "--glue-dir", str(tmp_path / "glue"), "--out", str(tmp_path / "out"),
                 "--spm", spm_data["spm"], "--dict", os.path.join(spm_data["bin"], "dict.txt")],
        "corpus": [*cli, "corpus", "--corpus", str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "text")],
        "arch": [*cli, "export", "--checkpoint", supernet, "--arch", str(tmp_path / "arch.json"),
                 "--out", str(tmp_path / "x.pt")],
    })
    assert_one_error_line(procs["glue"], ".tsv is not UTF-8 text: byte 0xef on line 2; convert it first")
    assert_one_error_line(procs["corpus"], "corpus.txt is not UTF-8 text: byte 0xff on line 2")
    assert_one_error_line(procs["arch"], "arch.json is not valid JSON")
    assert not (tmp_path / "text").exists() and not (tmp_path / "x.pt").exists()


@case("child-log-folder")
def child_log_folder(request):
    tmp_path = request.getfixturevalue("tmp_path")
    _keeps_checkpoint(request, ["--child-log", str(tmp_path / "none" / "log.jsonl")],
                      f"--child-log {tmp_path / 'none' / 'log.jsonl'}: there is no folder {tmp_path / 'none'}")
    assert not (tmp_path / "crash.pt").exists()


@case("missing-validation-split")
def missing_validation_split(request):
    tmp_path, data_bin, supernet = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "supernet"))
    (tmp_path / "data").mkdir()
    for name in ("dict.txt", "train.bin", "train.idx"):
        shutil.copy(os.path.join(data_bin, name), tmp_path / "data" / name)
    message = f"no 'valid' split in {tmp_path / 'data'} (no valid.bin/.idx): fairseq-preprocess --validpref makes one"
    proc = fairseq_train(str(tmp_path / "data"), str(tmp_path / "save"), "--max-update", "2", check=False)
    assert_one_error_line(proc, message)
    proc = magic("search", "--checkpoint", supernet, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "s"),
                 check=False)
    assert_one_error_line(proc, message)
    assert not list(tmp_path.glob("save/*.pt")) and not (tmp_path / "s").exists()


@case("from-pretrained-folder")
def from_pretrained_folder(request):
    """The hub given a folder without the checkpoint, or no folder."""
    tmp_path = request.getfixturevalue("tmp_path")
    load = "import fairseq_magic; from fairseq_magic.models.child import MagicChildModel; MagicChildModel.from_pretrained"
    proc = run([sys.executable, "-c", f"{load}('{tmp_path}')"], check=False)
    assert_one_error_line(proc, f"no model.pt, checkpoint_best.pt, checkpoint_last.pt in {tmp_path}: give "
                                "checkpoint_file= the checkpoint's name")
    proc = run([sys.executable, "-c", f"{load}('{tmp_path / 'none'}')"], check=False)
    assert_one_error_line(proc, f"model folder not found: {tmp_path / 'none'}")
    moved = tmp_path / "moved"  # a fine-tuning run whose data folder is gone
    moved.mkdir()
    state = load_state(str(Path(request.getfixturevalue("finetuned")["ft"]) / "checkpoint_best.pt"))
    state["cfg"]["task"]["data"] = str(tmp_path / "gone")
    torch.save(state, moved / "checkpoint_best.pt")
    proc = run([sys.executable, "-c", f"{load}('{moved}')"], check=False)
    assert_one_error_line(proc, f"was trained on {tmp_path / 'gone'}, which holds no dictionary now: give "
                                "data_name_or_path=")


@case("killed-peer-rank")
def killed_peer_rank(request):
    """Two gloo ranks; rank 1 is killed mid-training: rank 0 stops soon after, with one line."""
    tmp_path, data_bin = request.getfixturevalue("tmp_path"), request.getfixturevalue("data_bin")
    cmds = gloo_rank_commands(data_bin, str(tmp_path), 2, "--max-update", "100000")
    rank0 = subprocess.Popen(cmds[0], cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rank1 = subprocess.Popen(cmds[1], cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for line in rank0.stdout:  # rank 0 logs the updates: wait until training runs
            if '"num_updates": "3"' in line:
                break
        rank1.kill()
        killed = time.time()
        _, err = rank0.communicate(timeout=120)
    finally:
        rank0.kill()
        rank1.kill()
    assert time.time() - killed < 60
    assert rank0.returncode != 0
    last = err.strip().splitlines()[-1]  # torch prefixes a rank's stderr with "[rank0]: "
    assert re.match(r"(\[rank0\]: )?fairseq-magic: error: distributed training failed, a peer rank has stopped \(.*"
                    r"Connection (reset|closed) by peer", last), err[-3000:]


# every case above, registered by @case (this test is defined last so that all are there)
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, request):
    CASES[name](request)
