"""MAGIC-A's anchor (training/anchor.py): the first anchor, its replacement rules, the top-p
policy, and its decisions after a resume."""

import json
import os
import sys

import numpy as np
import pytest

from conftest import ROOT, build, fairseq_train, load_state, read_child_log, run
from fairseq_magic.training.anchor import Anchor, paired_comparison
from fairseq_magic.search.scoring import score_children
from fairseq_magic.models.search_state import SearchState
from fairseq_magic.space import SearchSpace

SPACE = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)
AT = [
    "--sampler", "gradual", "--gradual-k", "1", "--align-lambda", "0.5", "--align-every", "2",
    "--align-warmup-epochs", "0", "--anchor-eval-interval", "2", "--score-sentences", "16",
    "--anchor-metric", "loss", "--anchor-init-children", "6",
]


def test_top_p_anchor_policy():
    search_state = SearchState()
    anchor = Anchor(SPACE, search_state, seed=0)
    anchor.set((0,) * 6)
    state = search_state.anchor
    children = [tuple((i >> (2 * j)) & 3 for j in range(6)) for i in range(1, 10)] + [(0,) * 6]  # anchor last
    scores = list(range(10))  # the anchor scores best (9): top 0%
    assert anchor.choose_top_p(children, scores, p=30, r=10)  # 0% is outside 20..40%: replaced
    order = sorted(range(10), key=lambda i: -scores[i])
    assert anchor.child == children[order[3]]  # round(0.3 * 9) = 3rd best
    assert not anchor.choose_top_p(children, scores, p=30, r=10)  # at 33%: kept
    assert state.replacements == 1


def test_replacing_the_anchor_needs_an_improvement_beyond_noise():
    """A paired test on per-sentence scores: the mean improvement must exceed z
    standard errors; z = 0 is the old rule (any improvement)."""
    anchor = Anchor(SPACE, SearchState(), seed=0)
    anchor.set((0,) * 6)
    rng = np.random.default_rng(0)
    base = rng.normal(-9.0, 0.5, size=200)  # per-sentence Val of the anchor
    noise = rng.normal(0.0, 0.05, size=200)
    noisy = base + noise - noise.mean() + 0.002  # better on average by far less than its noise
    small = paired_comparison(noisy, base)
    assert small.diff > 0 and small.diff < 2 * small.se
    assert not anchor.consider((1,) * 6, small, z=2.0) and anchor.child == (0,) * 6
    assert anchor.consider((1,) * 6, small, z=0.0) and anchor.child == (1,) * 6  # the old rule chases it
    clear = paired_comparison(base + 0.05 + rng.normal(0, 0.05, size=200), base)
    assert clear.diff > 2 * clear.se and anchor.consider((2,) * 6, clear, z=2.0)
    assert anchor.child == (2,) * 6 and anchor.score == pytest.approx(clear.candidate)
    worse = paired_comparison(base - 0.05, base)
    assert not anchor.consider((3,) * 6, worse, z=0.0)
    assert anchor.state.replacements == 2


def test_first_anchor_is_the_best_of_the_scored_children(data_bin, caplog):
    """When alignment starts, the anchor is the best of --anchor-init-children
    children scored with the shared weights on the scoring sentences."""
    _, task, model = build(data_bin, *AT, "--anchor-init-children", "7")
    alignment = task.alignment
    model.set_child(task.strategy.child_for_update(0))
    assert alignment.anchor_arch is None  # nothing chosen before alignment starts
    with caplog.at_level("INFO"):
        alignment.begin_update(model, 0)  # what train_step calls before the update's forward
    children = alignment.anchor.initial_children(7)
    assert len(set(children)) == 7
    scores = [s.loss for s in score_children(model, model, children, task.strategy.scoring_batches())]
    assert alignment.anchor.child == children[int(np.argmin(scores))]
    assert alignment.anchor.score == pytest.approx(-min(scores))
    line = next(r.getMessage() for r in caplog.records if "children scored with the shared weights" in r.getMessage())
    assert "the best of 7 children" in line and f"best loss {min(scores):.4f}" in line
    assert f"median loss {np.median(scores):.4f}" in line
    alignment.begin_update(model, 1)  # chosen once: later updates keep it
    assert alignment.anchor.child == children[int(np.argmin(scores))]


def test_first_anchor_chosen_after_a_resume_is_the_uninterrupted_runs(data_bin, tmp_path):
    at = [*AT, "--align-warmup-updates", "4"]  # alignment (and the first anchor's choice) starts after the stop
    full, split = tmp_path / "full", tmp_path / "split"
    fairseq_train(data_bin, str(full), "--max-update", "6", "--child-log", str(full / "c.jsonl"), *at)
    fairseq_train(data_bin, str(split), "--max-update", "3", "--child-log", str(split / "c.jsonl"), *at)
    p_res = fairseq_train(data_bin, str(split), "--max-update", "6", "--child-log", str(split / "c.jsonl"), *at)
    log_full, log_split = read_child_log(str(full / "c.jsonl")), read_child_log(str(split / "c.jsonl"))
    assert log_full == log_split and "anchor" not in log_full[3] and "anchor" in log_full[4]
    assert "the best of 6 children scored with the shared weights at update 4" in p_res.stdout + p_res.stderr


def test_top_p_policy_at_epoch_ends_resumes_exactly(data_bin, tmp_path):
    """The top-p anchor is chosen at the end of epoch 1 (start of epoch 2), in an
    uninterrupted run and in one stopped after epoch 1 and resumed alike."""
    top_p = ["--align-lambda", "0.5", "--align-every", "3", "--align-warmup-epochs", "0",
             "--anchor-policy", "top-p", "--anchor-top-p", "30", "--anchor-top-r", "10",
             "--anchor-top-children", "6", "--score-sentences", "16", "--anchor-metric", "loss"]
    full, split = tmp_path / "full", tmp_path / "split"
    p_full = fairseq_train(data_bin, str(full), "--max-epoch", "2", "--child-log", str(full / "c.jsonl"), *top_p)
    fairseq_train(data_bin, str(split), "--max-epoch", "1", "--child-log", str(split / "c.jsonl"), *top_p)
    fairseq_train(data_bin, str(split), "--max-epoch", "2", "--child-log", str(split / "c.jsonl"), *top_p)
    out = p_full.stdout + p_full.stderr
    decisions = [line for line in out.splitlines() if "at the top" in line]
    assert len(decisions) == 1 and "of 7 children (p=30.0 +/- 10.0)" in decisions[0]
    assert read_child_log(str(full / "c.jsonl")) == read_child_log(str(split / "c.jsonl"))
    state = load_state(str(full / "checkpoint_last.pt"))["model"]["search_state"]
    search_state = json.loads(bytes(state.tolist()).decode())
    assert search_state["top_p_epoch"] == 2 and 20.0 <= search_state["anchor"]["percentile"] <= 40.0


def test_sharded_data_gives_the_top_p_policy_one_decision_per_shard(data_bin, tmp_path):
    """examples/sweeps/shard.py cuts the training split into shards that hold it
    exactly; fairseq-train over them trains one shard per epoch, and the top-p
    anchor is chosen again at each epoch end (how the anchor-top-p sweep
    makes epochs short)."""
    from fairseq.data import Dictionary, data_utils

    shards = run([sys.executable, str(ROOT / "examples" / "sweeps" / "shard.py"), data_bin, str(tmp_path / "data"),
                  "--shards", "3"]).stdout.strip().splitlines()[-1].split(":")
    dictionary = Dictionary.load(os.path.join(data_bin, "dict.txt"))
    whole = data_utils.load_indexed_dataset(os.path.join(data_bin, "train"), dictionary)
    parts = [data_utils.load_indexed_dataset(os.path.join(s, "train"), dictionary) for s in shards]
    assert [p[i].tolist() for p in parts for i in range(len(p))] == [whole[i].tolist() for i in range(len(whole))]
    top_p = ["--align-lambda", "0.5", "--align-every", "3", "--align-warmup-epochs", "0",
             "--anchor-policy", "top-p", "--anchor-top-p", "30", "--anchor-top-children", "6",
             "--score-sentences", "16", "--anchor-metric", "loss"]
    proc = fairseq_train(":".join(shards), str(tmp_path / "run"), "--max-epoch", "3", *top_p)
    out = proc.stdout + proc.stderr
    assert [s for s in shards if f"{s}/train" in out] == shards  # epoch e trained shard e - 1
    assert len([line for line in out.splitlines() if "at the top" in line]) == 2  # epochs 2 and 3
