"""Progressive shrinking: which pairs go, samplers inside a shrunk space, training runs."""

import json

import numpy as np

from conftest import fairseq_train, load_state, read_child_log
from fairseq_magic.training.samplers import GradualSampler, UniformSampler, count_children
from fairseq_magic.training.shrinking import Removal, apply_removals, choose_removals, is_single_child, pair_losses
from fairseq_magic.space import SearchSpace, hamming

SPACE = SearchSpace.build(4, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)
SHRINK = ["--shrink-per-epoch", "3", "--shrink-children", "12", "--score-sentences", "16", "--batch-size", "32"]


def test_the_worst_pairs_go_and_every_layer_keeps_one():
    allowed = [[0, 1], [0, 1, 2], [3], [0, 1, 2, 3]]
    children = [(0, 0, 3, 0), (1, 1, 3, 1), (1, 2, 3, 2), (0, 2, 3, 3)]
    losses = [1.0, 5.0, 4.0, 2.0]
    removals = choose_removals(allowed, pair_losses(children, losses), per_epoch=3)
    # mean losses: (1,1) 5.0, (3,1) 5.0, (0,1) 4.5, ...; ties break by layer
    assert [(r.layer, r.candidate) for r in removals] == [(1, 1), (3, 1), (0, 1)]
    assert removals[2] == Removal(0, 1, 4.5, 2)
    assert apply_removals(allowed, removals) == [[0], [0, 2], [3], [0, 2, 3]]
    # a layer's last operator stays, however badly it scores
    last = choose_removals([[0], [0, 1]], pair_losses([(0, 0), (0, 1)], [9.0, 1.0]), per_epoch=3)
    assert [(r.layer, r.candidate) for r in last] == [(1, 0)]


def test_unscored_pairs_stay_and_a_single_child_is_final():
    allowed = [[0, 1], [2, 3]]
    removals = choose_removals(allowed, pair_losses([(0, 2)], [3.0]), per_epoch=5)
    # (0, 1) and (1, 3) were never scored: no evidence against them, so they stay
    assert apply_removals(allowed, removals) == [[1], [3]]
    assert is_single_child([[1], [3]]) and not is_single_child(allowed)


def test_samplers_stay_inside_a_shrunk_space():
    allowed = [[0], [1, 3], [2], [0, 1, 2]]
    assert count_children(SPACE, allowed) == 6
    uniform = UniformSampler(SPACE, seed=0)
    assert all(all(c in opts for c, opts in zip(uniform(t, None, allowed), allowed)) for t in range(200))
    walk, previous = GradualSampler(SPACE, seed=0, gradual_k=1), (3, 2, 1, 0)  # drawn before the shrink
    children = []
    for t in range(200):
        previous = walk(t, previous, allowed)
        children.append(previous)
    assert all(all(c in opts for c, opts in zip(child, allowed)) for child in children)
    assert all(hamming(a, b) == 1 for a, b in zip(children, children[1:]))
    k3 = GradualSampler(SPACE, seed=0, gradual_k=3)  # only two layers have a choice left
    assert hamming(k3(5, children[-1], allowed), children[-1]) == 2
    counts = np.bincount([c[3] for c in children], minlength=4)
    assert counts[3] == 0 and all(counts[:3] > 30)


def test_training_shrinks_to_one_child_and_resumes_in_the_shrunk_space(data_bin, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    p_full = fairseq_train(data_bin, str(full), "--max-epoch", "8", "--child-log", str(full / "c.jsonl"), *SHRINK)
    fairseq_train(data_bin, str(split), "--max-epoch", "4", "--child-log", str(split / "c.jsonl"), *SHRINK)
    fairseq_train(data_bin, str(split), "--max-epoch", "8", "--child-log", str(split / "c.jsonl"), *SHRINK)
    out = p_full.stdout + p_full.stderr
    assert out.count("shrink: removed") == 24 - 6  # 6 layers x 4 candidates, 3 per epoch end, down to 6 pairs
    assert "shrink: one child left: " in out
    final = out.split("shrink: one child left: ")[1].split()[0]
    log = read_child_log(str(full / "c.jsonl"))
    assert log == read_child_log(str(split / "c.jsonl"))  # the shrunk space survives a resume
    assert log[-1]["child"] == final
    state = json.loads(bytes(load_state(str(full / "checkpoint_last.pt"))["model"]["search_state"].tolist()).decode())
    assert is_single_child(state["allowed"]) and state["shrink_epoch"] >= 5
