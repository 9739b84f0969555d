"""ELECTRA-style pre-training of a child: --task magic_electra --criterion magic_electra."""

import sys

import pytest
import torch
from fairseq import checkpoint_utils

from conftest import PLUGIN, load_state, run, train_log

ARCH = "MHA2,FFN,CONV3,FFN"


def electra(data_bin, save_dir, *extra, check=True):
    return run([
        sys.executable, "-m", "fairseq_cli.train", data_bin, "--user-dir", PLUGIN, "--task", "magic_electra",
        "--criterion", "magic_electra", "--arch", "magic_child", "--child-arch", ARCH, "--encoder-embed-dim", "32",
        "--encoder-ffn-embed-dim", "64", "--generator-fraction", "0.5", "--tokens-per-sample", "32",
        "--batch-size", "8", "--optimizer", "adam", "--lr", "2e-3", "--cpu", "--num-workers", "0",
        "--log-format", "json", "--log-interval", "1", "--no-progress-bar", "--seed", "1",
        "--save-dir", str(save_dir), *extra,
    ], check=check)


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("electra")
    return save, electra(data_bin, save, "--max-update", "60")


def test_generator_and_discriminator_learn_and_are_logged(trained):
    _, proc = trained
    records = train_log(proc)
    assert len(records) == 60
    assert all(key in records[-1] for key in ("gen_loss", "disc_loss", "disc_acc_replaced", "disc_acc_original"))
    first, last = records[:10], records[-10:]
    mean = lambda rows, key: sum(float(r[key]) for r in rows) / len(rows)  # noqa: E731
    assert mean(last, "gen_loss") < mean(first, "gen_loss") and mean(last, "disc_loss") < mean(first, "disc_loss")
    assert 5 < mean(last, "replaced_pct") < 16  # 15% masked, a few sampled back to the original token


def test_the_checkpoint_model_is_a_plain_magic_child(trained):
    save, _ = trained
    [model], cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(save / "checkpoint_last.pt")])
    assert type(model).__name__ == "MagicChildModel" and model.space.format(model.child) == ARCH
    state = load_state(str(save / "checkpoint_last.pt"))
    assert not any(k.startswith("generator") for k in state["model"])
    # the generator and the token head train with it and are saved for resuming, as the criterion's
    assert any(k.startswith("generator.layers") for k in state["criterion"]) and "head.out.weight" in state["criterion"]


def test_resuming_continues_exactly(data_bin, tmp_path):
    electra(data_bin, tmp_path / "straight", "--max-update", "6")
    electra(data_bin, tmp_path / "resumed", "--max-update", "3")
    electra(data_bin, tmp_path / "resumed", "--max-update", "6")
    a, b = (load_state(str(tmp_path / d / "checkpoint_last.pt")) for d in ("straight", "resumed"))
    for part in ("model", "criterion"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
