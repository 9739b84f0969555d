"""Few-shot super-nets (search/few_shot.py): the split chosen by gradient similarity, sub-super-nets that
train only their group's children, and each child scored by the sub-super-net that holds it."""

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import assert_one_error_line, fairseq_train, load_state, magic, read_child_log
from fairseq_magic.search.few_shot import balanced_partitions, best_partition


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 7), k=st.integers(2, 4))
def test_balanced_partitions_are_every_balanced_partition_once(n, k):
    if k > n:
        return
    found = [frozenset(map(frozenset, p)) for p in balanced_partitions(list(range(n)), k)]
    assert len(found) == len(set(found))
    expected = set()
    for labels in itertools.product(range(k), repeat=n):  # every assignment of items to k groups
        groups = [frozenset(i for i in range(n) if labels[i] == g) for g in range(k)]
        sizes = [len(g) for g in groups]
        if min(sizes) > 0 and max(sizes) - min(sizes) <= 1:
            expected.add(frozenset(groups))
    assert set(found) == expected


def test_the_cut_separates_the_candidates_whose_gradients_disagree():
    # candidates 0 and 2 agree, 1 and 3 agree, the two pairs disagree
    sim = np.array([[1, -0.2, 0.9, -0.1], [-0.2, 1, 0.0, 0.8], [0.9, 0.0, 1, -0.3], [-0.1, 0.8, -0.3, 1]])
    split = best_partition(3, [4, 5, 6, 7], ["a", "b", "c", "d"], sim, 2)
    assert split.groups == [[4, 6], [5, 7]]
    assert split.cut == pytest.approx(np.mean([-0.2, -0.1, 0.0, -0.3]))
    assert split.within == pytest.approx(np.mean([0.9, 0.8]))


def operator_weights(state: dict, layer: int, candidate: int) -> list:
    prefix = f"encoder.sentence_encoder.layers.{layer}.candidates.{candidate}."
    return [v for k, v in sorted(state["model"].items()) if k.startswith(prefix)]


def test_sub_supernets_train_their_group_only_and_score_the_children_they_hold(supernet, data_bin, tmp_path):
    few = tmp_path / "few"
    out = magic("few-shot", "--checkpoint", supernet, "--out", str(few), "--repeats", "1", "--sentences", "8",
                "--cpu").stdout
    split = json.loads((few / "split.json").read_text())
    assert [s["layer"] for s in split["layers"]] == [1, 2, 3, 4, 5]
    layer = split["layer"]
    assert split["layer"] == min(split["layers"], key=lambda s: s["cut"])["layer"]
    groups = next(s["groups"] for s in split["layers"] if s["layer"] == layer)
    assert sorted(c for g in groups for c in g) == [0, 1, 2, 3] and [len(g) for g in groups] == [2, 2]
    subs = [str(few / f"sub{i}" / "checkpoint_last.pt") for i in range(2)]
    assert split["estimator"] in out and split["estimator"] == "+".join(subs)

    # sub-super-net 0 resumes from the warm-up (6 updates) in its folder and trains 4 more
    before = load_state(subs[0])
    log = str(tmp_path / "children.jsonl")
    fairseq_train(data_bin, str(few / "sub0"), "--max-update", "10", "--embed-factor-dim", "16", "--child-log", log)
    trained = read_child_log(log)
    assert len(trained) == 4 and all(r["child"].split(",")[layer] in split["groups"][0] for r in trained)
    after = load_state(subs[0])
    for c in range(4):  # the split layer: the other group's operators never move
        moved = any(not torch.equal(a, b) for a, b in zip(operator_weights(before, layer, c),
                                                           operator_weights(after, layer, c)))
        assert not moved or c in groups[0], (c, groups)
    assert any(not torch.equal(a, b) for c in groups[0]
               for a, b in zip(operator_weights(before, layer, c), operator_weights(after, layer, c)))

    # scored as one estimator: each child by the sub-super-net that holds it
    from fairseq_magic.search.ensemble import Ensemble
    from fairseq_magic.search.scoring import load_for_scoring, score_children

    def load(path):
        return load_for_scoring(path, sentences=8, cpu=True)

    estimator = Ensemble("+".join(subs), load)
    space = estimator.space
    children = [space.parse(a) for a in ("MHA2,FFN,CONV3,CONV5,MHA2,FFN", "CONV5,CONV3,FFN,MHA2,CONV5,CONV3")]
    children += [tuple(c if j != layer else g for j, c in enumerate(children[0])) for g in range(4)]
    scores = estimator.score(children)
    for child, s in zip(children, scores):
        holder = 0 if child[layer] in groups[0] else 1
        model, _, _, batches = estimator.loaded[holder]
        assert s.loss == pytest.approx(score_children(model, model, [child], batches)[0].loss, abs=1e-9)
        assert estimator.checkpoint_of(child) == subs[holder]

    # the rest of the command line takes it where it takes a super-net
    magic("search", "--checkpoint", "+".join(subs), "--out", str(tmp_path / "search"), "--algorithm", "random",
          "--children", "4", "--sentences", "8", "--cpu")
    record = json.loads((tmp_path / "search" / "search.json").read_text())
    assert record["ensemble"] == subs
    best = record["top"][0]["arch"].split(",")[layer]  # export takes the weights of the sub-super-net holding it
    assert record["checkpoint"] == subs[0 if best in split["groups"][0] else 1]
    proc = magic("search", "--checkpoint", subs[0], "--out", str(tmp_path / "half"), "--algorithm", "random",
                 "--children", "2", "--cpu", check=False)
    assert_one_error_line(proc, f"in layer {layer}: join every sub-super-net of the split with '+'")

    # a sub-super-net is not split again, and trained sub-super-nets are never overwritten
    proc = magic("few-shot", "--checkpoint", subs[0], "--out", str(tmp_path / "again"), "--repeats", "1",
                 "--sentences", "8", "--cpu", check=False)
    assert_one_error_line(proc, "is a sub-super-net already")
    proc = magic("few-shot", "--checkpoint", supernet, "--out", str(few), "--repeats", "1", "--sentences", "8",
                 "--cpu", check=False)
    assert_one_error_line(proc, "exists (a sub-super-net being trained?)")
    proc = magic("few-shot", "--checkpoint", supernet, "--out", str(tmp_path / "five"), "--groups", "5",
                 "--sentences", "8", "--cpu", check=False)
    assert_one_error_line(proc, "no layer from 1 on has 5 candidates to split into 5 groups")
    assert load_state(subs[0])["extra_state"]["train_iterator"]["iterations_in_epoch"] == \
        after["extra_state"]["train_iterator"]["iterations_in_epoch"]
