"""FairNAS's step (training/single_path.py, --sampler fair): one update of C micro-batches trains C
children, and its one optimizer step moves every operator any of them used, with the summed
gradients, and no other. ``--fair-step last-child`` keeps the old defect as a named ablation: only
the last micro-batch's child's operators move."""

import itertools
import json

import pytest
import torch

from conftest import (ROOT, build, fairseq_train, hydra_train, launch_ranks, load_state, read_child_log, train_log,
                      assert_one_error_line)
from fairseq_magic.space import SearchSpace
from fairseq_magic.training.training_share import TrainingShares

PLAIN = ["--candidate-ops", "MHA2,FFN,CONV3,CONV5"]
GROUPED = ["--candidate-ops", "MHA2,MHA4|FFN32,FFN64,CONV3"]


def operator_keys(state, layer, candidate):
    prefix = f"encoder.sentence_encoder.layers.{layer}.candidates.{candidate}."
    return [k for k in state if k.startswith(prefix)]


def moved_operators(space, before, after):
    """The (layer, candidate) pairs whose weights changed between two state dicts."""
    moved = set()
    for layer, candidate in itertools.product(range(space.num_layers), range(space.num_candidates)):
        keys = operator_keys(before, layer, candidate)
        if any(not torch.equal(before[k], after[k]) for k in keys):
            moved.add((layer, candidate))
    return moved


def used_by(children):
    return {(layer, c) for child in children for layer, c in enumerate(child)}


def shared_moved(before, after):
    """Whether every parameter outside the layers' operators (embeddings, LM head, ...) moved."""
    shared = [k for k in before if ".candidates." not in k and before[k].is_floating_point()
              and "version" not in k and not k.endswith("_float_tensor")]
    return all(not torch.equal(before[k], after[k]) for k in shared if k.endswith("weight"))


def train_in_process(data_bin, tmp_path, *extra, updates=2, freq=4, allowed=None):
    """``updates`` updates of the tiny super-net through fairseq's Trainer (``freq`` micro-batches
    each, one child per micro-batch); the weights before and after the last one, that update's
    children (from --child-log) and the search state."""
    from fairseq.data import iterators
    from fairseq.trainer import Trainer

    log = tmp_path / "children.jsonl"
    cfg, task, model = build(data_bin, "--sampler", "fair", "--update-freq", str(freq), "--child-log", str(log), *extra)
    if allowed is not None:  # a shrunk space, as progressive shrinking leaves it
        model.search_state.allowed = allowed
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    epoch_itr = trainer.get_train_iterator(epoch=1)
    trainer.begin_epoch(1)
    batches = iterators.GroupedIterator(epoch_itr.next_epoch_itr(shuffle=False), freq)
    before = None
    for update, samples in zip(range(updates), batches):
        if update == updates - 1:
            before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer.train_step(samples)
    after = model.state_dict()
    space = model.space
    records = read_child_log(str(log))
    children = [[space.parse(r["child"]) for r in records if r["update"] == u] for u in range(updates)]
    return space, before, after, children, model.search_state


def counted_steps(space, updates):
    """The training counts of steps that each moved the operators ``used_by`` one update's children."""
    counts = [[0] * space.num_candidates for _ in range(space.num_layers)]
    for children in updates:
        for layer, c in used_by(children):
            counts[layer][c] += 1
    return counts


@pytest.mark.parametrize("ops,freq,allowed", [
    (PLAIN, 4, None),  # one whole window: every operator of every layer
    (PLAIN, 2, None),  # half a window: 2 of each layer's 4 operators
    (GROUPED, 4, None),  # layers of 2 and 3 candidates: a window of 3 spans updates
    (PLAIN, 4, [[0, 1, 2], [1, 3], [0, 1, 2, 3], [2], [0, 3], [1, 2, 3]]),  # after progressive shrinking
], ids=["plain-window", "plain-half-window", "grouped", "shrunk"])
def test_one_update_moves_exactly_the_operators_its_children_used(data_bin, tmp_path, ops, freq, allowed):
    space, before, after, updates, state = train_in_process(data_bin, tmp_path, *ops, freq=freq, allowed=allowed)
    children = updates[-1]
    assert len(children) == freq and len(set(children)) == freq
    if allowed is not None:
        assert all(c in options for child in children for c, options in zip(child, allowed))
    assert moved_operators(space, before, after) == used_by(children)  # every one they used, no other
    assert shared_moved(before, after)
    shares = TrainingShares(space, state.visits)  # the steps counted: what moved, once per update
    assert shares.layer.tolist() == counted_steps(space, updates)
    if ops is PLAIN and freq == 4 and allowed is None:
        assert shares.layer.tolist() == [[2] * 4] * 6 and shares.share_sd() == 0.0


def test_the_last_child_ablation_moves_only_the_last_childs_operators(data_bin, tmp_path):
    space, before, after, updates, state = train_in_process(data_bin, tmp_path, *PLAIN, "--fair-step", "last-child")
    children = updates[-1]
    assert len(children) == 4
    assert moved_operators(space, before, after) == used_by(children[-1:])
    assert shared_moved(before, after)  # the embeddings and LM head still took all four gradients
    shares = TrainingShares(space, state.visits)  # one operator per layer stepped per update
    assert shares.layer.tolist() == counted_steps(space, [u[-1:] for u in updates])


def test_fairnas_resumes_exactly_and_counts_its_steps(data_bin, tmp_path):
    """Through fairseq-train: 3 updates of half a window each equal 2 updates, a resume and one more; the
    resumed update moves exactly its children's operators; share_sd is 0 after whole windows."""
    full, split = tmp_path / "full", tmp_path / "split"
    args = ["--sampler", "fair", "--update-freq", "2"]
    p_full = fairseq_train(data_bin, str(full), "--max-update", "4", "--child-log", str(full / "c.jsonl"), *args)
    fairseq_train(data_bin, str(split), "--max-update", "3", "--child-log", str(split / "c.jsonl"), *args)
    before = load_state(str(split / "checkpoint_last.pt"))["model"]
    p_resumed = fairseq_train(data_bin, str(split), "--max-update", "4", "--child-log", str(split / "c.jsonl"), *args)
    assert "Loaded checkpoint" in p_resumed.stdout + p_resumed.stderr
    records = read_child_log(str(full / "c.jsonl"))
    assert records == read_child_log(str(split / "c.jsonl"))  # children and weight checksums
    a, b = load_state(str(full / "checkpoint_last.pt"))["model"], load_state(str(split / "checkpoint_last.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    space = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)
    last = [space.parse(r["child"]) for r in records if r["update"] == 3]
    assert len(last) == 2 and moved_operators(space, before, b) == used_by(last)
    saved = json.loads(bytes(load_state(str(full / "checkpoint_last.pt"))["model"]["search_state"].tolist()).decode())
    assert TrainingShares(space, saved["visits"]).layer.tolist() == [[2] * 4] * 6
    assert float(train_log(p_full)[-1]["share_sd"]) == 0.0
    assert "a window spans 2 updates" in p_full.stdout + p_full.stderr


def test_fairnas_on_two_gloo_ranks_steps_the_same_window(data_bin, tmp_path):
    log = str(tmp_path / "children.jsonl")
    args = ["--sampler", "fair", "--update-freq", "2"]
    launch_ranks(data_bin, str(tmp_path), log, 1, extra=args)
    before = load_state(str(tmp_path / "checkpoint_last.pt"))["model"]
    launch_ranks(data_bin, str(tmp_path), log, 2, extra=args)
    after = load_state(str(tmp_path / "checkpoint_last.pt"))["model"]
    rank0 = [(r["update"], r["child"], r["weights"]) for r in read_child_log(log)]
    assert rank0 == [(r["update"], r["child"], r["weights"]) for r in read_child_log(log + ".rank1")]
    space = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)
    last = [space.parse(child) for update, child, _ in rank0 if update == 1]
    assert len(last) == 2 and moved_operators(space, before, after) == used_by(last)


def test_the_fairnas_config_under_hydra_steps_whole_windows(data_bin, tmp_path):
    """examples/config/fairnas.yaml as shipped (update_freq: [4]), scaled down: the second update, after a
    resume, moves every operator (4 children, one per candidate in each layer)."""
    tiny = [f"task.data={data_bin}", "lr_scheduler.warmup_updates=1", "model.supernet_layers=4",
            "model.encoder_embed_dim=32", "model.encoder_ffn_embed_dim=64", "model.embed_factor_dim=16",
            "model.candidate_ops='MHA2,FFN,CONV3,CONV5'", "task.tokens_per_sample=32", "dataset.batch_size=4",
            "common.log_format=json", "common.log_interval=1", f"++task.child_log={tmp_path / 'c.jsonl'}"]
    config = ROOT / "examples" / "config"
    hydra_train(config, "fairnas", tmp_path, "optimization.max_update=1", *tiny)
    before = load_state(str(tmp_path / "checkpoint_last.pt"))
    assert before["cfg"]["optimization"]["update_freq"] == [4]
    hydra_train(config, "fairnas", tmp_path, "optimization.max_update=2", *tiny)
    after = load_state(str(tmp_path / "checkpoint_last.pt"))["model"]
    space = SearchSpace.build(4, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)
    last = [space.parse(r["child"]) for r in read_child_log(str(tmp_path / "c.jsonl")) if r["update"] == 1]
    assert len(last) == 4 and moved_operators(space, before["model"], after) == used_by(last) == {
        (layer, c) for layer in range(4) for c in range(4)}


def test_last_child_needs_the_fair_sampler(data_bin, tmp_path):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "1", "--fair-step", "last-child", check=False)
    assert_one_error_line(proc, "--fair-step last-child is an ablation of FairNAS's step; it needs --sampler fair")
