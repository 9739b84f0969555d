"""Every row of the README's bad-input table, as a user (or an attacker) meets it.

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

import pytest
import torch

from conftest import (COMMON, PLUGIN, ROOT, TINY, assert_one_error_line, fairseq_train, gloo_rank_commands, magic,
                      pretrain, run, train_log)

ARCH = "MHA2,FFN,CONV3,CONV5,FFN,MHA2"
CASES = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


def readme_rows():
    text = (ROOT / "README.md").read_text()
    section = re.split(r"\n#{1,3} ", text[text.index("### Bad input"):])[0]
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
    tmp_path, data_bin = request.getfixturevalue("tmp_path"), request.getfixturevalue("data_bin")
    good = request.getfixturevalue("trained")
    (tmp_path / "garbage.pt").write_bytes(b"\x00this is not a checkpoint")
    proc = magic("export", "--checkpoint", str(tmp_path / "garbage.pt"), "--arch", ARCH, "--out", str(tmp_path / "x.pt"),
                 check=False)
    assert_one_error_line(proc, "cannot read checkpoint")
    assert not (tmp_path / "x.pt").exists()
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
        ["export", "--checkpoint", roberta, "--arch", ARCH, "--out", str(tmp_path / "x.pt")],
        ["derive", roberta, "-o", str(tmp_path / "a.json")],
        ["rank", "sample", "--checkpoint", roberta, "--out", str(tmp_path / "c")],
    )] + [(child, "magic_child", ["export", "--checkpoint", child, "--arch", ARCH, "--out", str(tmp_path / "x.pt")])]
    for path, model, args in commands:
        proc = magic(*args, check=False)
        assert_one_error_line(proc, f"is not a fairseq-magic super-net checkpoint (its model is '{model}')")
    assert not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------------------------- resume and save


@case("missing-restore-file")
def missing_restore_file(request):
    tmp_path, data_bin, good = (request.getfixturevalue(f) for f in ("tmp_path", "data_bin", "trained"))
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "4", "--restore-file", str(tmp_path / "typo.pt"),
                         check=False)
    assert_one_error_line(proc, f"--restore-file not found: {tmp_path / 'typo.pt'}")
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == good


@case("cut-short-last-checkpoint")
def cut_short_last_checkpoint(request):
    """checkpoint_last.pt cut short by a crash: the resume continues from the newest readable checkpoint."""
    tmp_path, data_bin = request.getfixturevalue("tmp_path"), request.getfixturevalue("data_bin")
    fairseq_train(data_bin, str(tmp_path), "--max-update", "4", "--save-interval-updates", "2",
                  "--keep-interval-updates", "1", "--no-epoch-checkpoints")
    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "6")
    warnings = [line for line in proc.stdout.splitlines() if "is unreadable" in line]
    assert len(warnings) == 1, proc.stdout[-3000:]
    assert re.search(r"resuming from .*checkpoint(_1_4|_best)\.pt", warnings[0])  # both written at update 4
    assert [r["num_updates"] for r in train_log(proc)] == ["5", "6"]


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
    assert_one_error_line(proc, "the generator must not be larger than the discriminator")
    proc = run(common + ["--arch", "magic_supernet_tiny"], check=False)
    assert_one_error_line(proc, "--task magic_electra trains a magic_child discriminator")
    assert not list(tmp_path.glob("*.pt"))


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
