"""Export a child of a super-net, and use it as fairseq uses RoBERTa."""

import sys

import pytest
import torch
from fairseq import checkpoint_utils

from conftest import COMMON, load_state, magic, run, train_log
from fairseq_magic.space import SearchSpace, save_child

ARCH = "MHA2,FFN,CONV3,CONV5,FFN,MHA2"
SPACE = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64, embed_dim=16)


def test_exported_child_computes_what_the_supernet_computes(supernet, tmp_path):
    arch_file = tmp_path / "child.json"
    save_child(str(arch_file), SPACE, SPACE.parse(ARCH))
    out = tmp_path / "child" / "model.pt"
    magic("export", "--checkpoint", supernet, "--arch", str(arch_file), "--out", str(out))

    [child], cfg, _ = checkpoint_utils.load_model_ensemble_and_task([str(out)])
    [net], _, _ = checkpoint_utils.load_model_ensemble_and_task([supernet])
    assert type(child).__name__ == "MagicChildModel" and cfg.model.child_arch == ARCH
    n_child = sum(p.numel() for p in child.parameters())
    assert n_child == SPACE.params(SPACE.parse(ARCH), vocab_size=len(child.encoder.dictionary), max_positions=32)
    assert n_child < sum(p.numel() for p in net.parameters())  # no unused operators
    net.set_child(ARCH)
    child.eval(), net.eval()
    tokens = torch.randint(4, len(child.encoder.dictionary), (3, 20))
    tokens[1, 15:] = 1  # padding
    with torch.no_grad():
        a, a_extra = child(tokens, return_all_hiddens=True)
        b, b_extra = net(tokens, return_all_hiddens=True)
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(a_extra["inner_states"], b_extra["inner_states"]))


def test_retrain_from_scratch_and_continue_from_the_export(supernet, data_bin, tmp_path):
    arch_file = tmp_path / "child.json"
    save_child(str(arch_file), SPACE, SPACE.parse(ARCH))
    base = [sys.executable, "-m", "fairseq_cli.train", data_bin, *COMMON[:2], "--task", "masked_lm",
            "--criterion", "masked_lm", "--arch", "magic_child", "--child-arch", str(arch_file),
            "--tokens-per-sample", "32", "--batch-size", "8", "--optimizer", "adam", "--lr", "1e-3",
            "--cpu", "--num-workers", "0", "--log-format", "json", "--log-interval", "1", "--max-update", "5"]
    scratch = run(base + ["--save-dir", str(tmp_path / "scratch")])
    assert len(train_log(scratch)) == 5
    assert not any("candidates" in k for k in load_state(str(tmp_path / "scratch" / "checkpoint_last.pt"))["model"])

    out = tmp_path / "export.pt"
    magic("export", "--checkpoint", supernet, "--arch", ARCH, "--out", str(out))
    cont = run(base + ["--save-dir", str(tmp_path / "cont"), "--restore-file", str(out),
                       "--reset-optimizer", "--reset-dataloader", "--reset-meters"])
    assert "Loaded checkpoint" in cont.stdout + cont.stderr
    # inherited weights start far below the from-scratch loss
    assert float(train_log(cont)[0]["loss"]) < float(train_log(scratch)[0]["loss"])

    arch_file.unlink()  # a retrained checkpoint rebuilds without the architecture file
    [model], cfg, _ = checkpoint_utils.load_model_ensemble_and_task([str(tmp_path / "scratch" / "checkpoint_last.pt")])
    assert cfg.model.child_arch == ARCH and model.space.format(model.child) == ARCH


@pytest.mark.parametrize(
    "args,message",
    [
        (["--arch", "MHA2,FFN"], "architecture has 2 layers, the space has 6"),
        (["--arch", "MHA2,FFN,CONV3,CONV5,FFN,MHA8"], "not a candidate"),
    ],
)
def test_export_bad_child_fails_clearly(supernet, tmp_path, args, message):
    proc = magic("export", "--checkpoint", supernet, *args, "--out", str(tmp_path / "x.pt"), check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("fairseq-magic: error:")
    assert message in proc.stderr and not (tmp_path / "x.pt").exists()
