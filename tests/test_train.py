"""SPOS training through the real fairseq-train on tiny generated data."""

import json
import os
import sys
from collections import defaultdict

import pytest
import torch

from conftest import (PLUGIN, ROOT, fairseq_train, hydra_train, launch_ranks, load_state, read_child_log, run,
                      train_log)
from fairseq_magic.space import SearchSpace

SPACE = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)


def operator_tensors(model_state, layer, candidate):
    prefix = f"encoder.sentence_encoder.layers.{layer}.candidates.{candidate}."
    return {k: v for k, v in model_state.items() if k.startswith(prefix)}


def assert_only_sampled_operators_moved(before, after, sampled):
    """Every (layer, candidate) not in ``sampled`` is bit-identical; the sampled ones moved."""
    for layer in range(SPACE.num_layers):
        for cand in range(SPACE.num_candidates):
            a, b = operator_tensors(before, layer, cand), operator_tensors(after, layer, cand)
            same = all(torch.equal(a[k], b[k]) for k in a)
            assert same != ((layer, cand) in sampled), (layer, cand)


def sampled_pairs(children):
    return {(layer, c) for child in children for layer, c in enumerate(SPACE.parse(child))}


def test_spos_trains_and_validates_each_child(data_bin, tmp_path):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "20", "--valid-children", "3")
    records = train_log(proc)
    assert len(records) == 20
    assert float(records[-1]["loss"]) < float(records[0]["loss"])
    out = proc.stdout + proc.stderr
    valid = json.loads([line for line in out.splitlines() if "| valid |" in line][-1].split("| valid |", 1)[1])
    children = [float(valid[f"valid_child{i}_loss"]) for i in range(3)]
    assert "valid_child3_loss" not in valid
    assert abs(float(valid["valid_loss"]) - sum(children) / 3) < 0.002  # the mean of the children
    assert os.path.exists(tmp_path / "checkpoint_last.pt")


def test_same_child_on_every_micro_batch_of_an_update(data_bin, tmp_path):
    log = str(tmp_path / "children.jsonl")
    fairseq_train(data_bin, str(tmp_path), "--max-update", "8", "--update-freq", "3", "--child-log", log)
    by_update = defaultdict(list)
    for rec in read_child_log(log):
        by_update[rec["update"]].append(rec["child"])
    assert sorted(by_update) == list(range(8))
    assert all(len(children) == 3 and len(set(children)) == 1 for children in by_update.values())
    assert len({children[0] for children in by_update.values()}) > 1  # SPOS resamples every update


def test_resume_continues_exactly(data_bin, tmp_path):
    """A run stopped at update 3 and resumed to 6 equals the uninterrupted run."""
    full, split = tmp_path / "full", tmp_path / "split"
    p_full = fairseq_train(data_bin, str(full), "--max-update", "6", "--child-log", str(full / "c.jsonl"))
    fairseq_train(data_bin, str(split), "--max-update", "3", "--child-log", str(split / "c.jsonl"))
    p_resumed = fairseq_train(data_bin, str(split), "--max-update", "6", "--child-log", str(split / "c.jsonl"))
    assert "Loaded checkpoint" in p_resumed.stdout + p_resumed.stderr
    assert read_child_log(str(full / "c.jsonl")) == read_child_log(str(split / "c.jsonl"))
    assert [r["loss"] for r in train_log(p_full)][3:] == [r["loss"] for r in train_log(p_resumed)]
    a = load_state(str(full / "checkpoint_last.pt"))["model"]
    b = load_state(str(split / "checkpoint_last.pt"))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "precision",
    [[], ["--fp16", "--fp16-no-flatten-grads"], ["--memory-efficient-fp16"], ["--amp"],
     ["--bf16", "--fp16-no-flatten-grads"]],
    ids=["fp32", "fp16", "memory-efficient-fp16", "amp", "bf16"],  # bf16: fairseq's --tpu coupling undone
)
def test_unsampled_operators_stay_bit_identical(data_bin, tmp_path, precision):
    """Updates 4-6 leave every operator they did not sample untouched, although
    Adam has momentum for operators sampled in updates 1-3 and weight decay is
    on, through each of fairseq's optimizer wrappers."""
    log = str(tmp_path / "children.jsonl")
    half = {"FAIRSEQ_MAGIC_CPU_HALF": "1"}  # fairseq's fp16 wrappers, emulated on the CPU (refused without it)
    fairseq_train(data_bin, str(tmp_path), "--max-update", "3", "--child-log", log, *precision, env=half)
    before = load_state(str(tmp_path / "checkpoint_last.pt"))["model"]
    fairseq_train(data_bin, str(tmp_path), "--max-update", "6", "--child-log", log, *precision, env=half)
    after = load_state(str(tmp_path / "checkpoint_last.pt"))["model"]
    records = read_child_log(log)
    early = sampled_pairs(r["child"] for r in records if r["update"] < 3)
    late = sampled_pairs(r["child"] for r in records if r["update"] >= 3)
    assert early - late, "the test needs operators with momentum that are not sampled later"
    assert_only_sampled_operators_moved(before, after, late)


def test_two_gloo_ranks_train_the_same_children_and_freeze_the_rest(data_bin, tmp_path):
    log = str(tmp_path / "children.jsonl")
    launch_ranks(data_bin, str(tmp_path), log, 3)
    before = load_state(str(tmp_path / "checkpoint_last.pt"))["model"]
    outs = launch_ranks(data_bin, str(tmp_path), log, 6)
    assert "distributed init (rank 1)" in outs[1] or "rank 1" in outs[1]
    after = load_state(str(tmp_path / "checkpoint_last.pt"))["model"]
    rank0 = [(r["update"], r["child"]) for r in read_child_log(log)]
    rank1 = [(r["update"], r["child"]) for r in read_child_log(log + ".rank1")]
    assert rank0 == rank1 and len(rank0) == 6
    late = sampled_pairs(child for update, child in rank0 if update >= 3)
    assert_only_sampled_operators_moved(before, after, late)


@pytest.mark.parametrize("config", ["spos_tiny", "spos", "magic_t", "magic_a", "magic_at", "fairnas", "gaea_tiny"])
def test_hydra_train_with_example_configs(data_bin, tmp_path, config):
    """Every shipped config runs under fairseq-hydra-train, scaled down to tiny sizes."""
    proc = hydra_train(
        ROOT / "examples" / "config", config, tmp_path, f"task.data={data_bin}",
        "optimization.max_update=4", "optimization.update_freq=[1]", "lr_scheduler.warmup_updates=1",
        "model.supernet_layers=8", "model.encoder_embed_dim=32", "model.encoder_ffn_embed_dim=64",
        "model.embed_factor_dim=16", "model.candidate_ops='MHA2,FFN,CONV3,CONV5'", "task.tokens_per_sample=32",
        "dataset.batch_size=8", "common.log_format=json", "common.log_interval=1", "++task.align_warmup_epochs=0",
        "++task.anchor_eval_interval=2", "++task.score_sentences=16", "++task.arch_subset=valid",
    )
    state = load_state(str(tmp_path / "checkpoint_last.pt"))
    assert state["cfg"]["model"]["_name"] == "magic_supernet"
    records = train_log(proc)
    assert len(records) == 4
    assert ("align_loss" in records[-1]) == (config in ("magic_a", "magic_at"))
    assert ("arch_entropy" in records[-1]) == (config == "gaea_tiny")


def test_a_seed_sweep_is_a_hydra_multirun_on_submitit(data_bin, tmp_path):
    """fairseq-hydra-train -m of a shipped config over two seeds, through submitit's local launcher and the
    run_config group: each run in its own directory, each with its checkpoint of its own seed."""
    run([sys.executable, "-m", "fairseq_cli.hydra_train", "-m", "--config-dir", str(ROOT / "examples" / "config"),
         "--config-name", "spos_tiny", "common.seed=1,2", "hydra/launcher=submitit_local", "+run_config=local",
         f"task.data={data_bin}", f"common.user_dir={PLUGIN}", f"hydra.sweep.dir={tmp_path}",
         "optimization.max_update=2", "model.supernet_layers=2", "model.encoder_embed_dim=32",
         "model.encoder_ffn_embed_dim=64", "task.tokens_per_sample=32", "dataset.batch_size=8"])
    for seed in (1, 2):
        runs = list(tmp_path.glob(f"common.seed={seed},*/checkpoints/spos_tiny/checkpoint_last.pt"))
        assert len(runs) == 1, sorted(p.name for p in tmp_path.iterdir())
        state = load_state(str(runs[0]))
        assert state["cfg"]["common"]["seed"] == seed and state["optimizer_history"][-1]["num_updates"] == 2


@pytest.mark.parametrize("config", ["retrain_mlm", "retrain_electra"])
def test_hydra_retrain_configs_run_a_child(data_bin, tmp_path, config):
    """The paper-scale retraining configs run 5 updates of a tiny child on the CPU."""
    proc = hydra_train(
        ROOT / "examples" / "config", config, tmp_path, f"task.data={data_bin}", "model.child_arch='MHA2,FFN,CONV3,FFN'",
        "+model.encoder_embed_dim=32", "+model.encoder_ffn_embed_dim=64", "optimization.max_update=5",
        "optimization.update_freq=[1]", "lr_scheduler.warmup_updates=1", "task.tokens_per_sample=32",
        "dataset.batch_size=8", "common.log_format=json", "common.log_interval=1",
    )
    records = train_log(proc)
    assert len(records) == 5 and ("disc_loss" in records[-1]) == (config == "retrain_electra")
    assert load_state(str(tmp_path / "checkpoint_last.pt"))["cfg"]["model"]["_name"] == "magic_child"


def test_bf16_on_the_command_line_is_bf16_not_tpu(data_bin):
    """fairseq 0.12's parser turns every --bf16 into --tpu as well (a GPU run then imports torch_xla and
    crashes); what fairseq-train hands its main, with the plugin loaded, is bfloat16 alone."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils

    args = options.parse_args_and_arch(options.get_training_parser(), [
        data_bin, "--user-dir", PLUGIN, "--task", "masked_lm", "--arch", "roberta_base", "--bf16", "--cpu"])
    assert args.tpu  # fairseq's own coupling
    seen = []
    distributed_utils.call_main(convert_namespace_to_omegaconf(args), seen.append)
    assert seen[0].common.bf16 and not seen[0].common.tpu and not seen[0].distributed_training.tpu

