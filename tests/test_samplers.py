"""The samplers (training/samplers.py): MAGIC-T's gradual walk, the fair samplers (FairNAS and the
fair gradual walk), and the training-share instrument."""

import json

import numpy as np
import pytest
from scipy.stats import chisquare

from conftest import assert_one_error_line, fairseq_train, launch_ranks, load_state, read_child_log, train_log
from fairseq_magic.training.samplers import FairGradualSampler, FairSampler, GradualSampler, UniformSampler, build_sampler
from fairseq_magic.space import SearchSpace, SpaceError, hamming
from fairseq_magic.training.training_share import TrainingShares

SPACE = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)
GROUPED = SearchSpace.build(6, "MHA2,MHA4|FFN32,FFN64,CONV3", hidden_dim=32, ffn_dim=64)


def walk(sampler, space, steps, allowed=None):
    """The children of ``steps`` updates, with the counts a training keeps."""
    shares, children, previous = TrainingShares(space), [], None
    for t in range(steps):
        previous = sampler(t, previous, allowed, shares=shares)
        shares.add(previous)
        children.append(previous)
    return children, shares


@pytest.mark.parametrize("space", [SPACE, GROUPED], ids=["plain", "grouped"])
def test_fair_window_holds_every_candidate_once_per_layer(space):
    window = FairSampler(space, seed=3).window
    assert window == (4 if space is SPACE else 6)  # grouped: lcm(2, 3)
    sampler = FairSampler(space, seed=3, micro_batches=window)  # --update-freq C: one window per update
    for update in range(20):
        children = [sampler(update, micro=i) for i in range(window)]
        for layer, options in enumerate(space.layer_options):
            taken = [c[layer] for c in children]
            assert sorted(taken) == sorted(list(options) * (window // len(options))), (update, layer)
    # windows are random permutations, not a fixed rotation
    firsts = {sampler(update, micro=0) for update in range(20)}
    assert len(firsts) > 10


def test_fair_window_across_updates_and_in_a_shrunk_space():
    allowed = [[0, 2], [1], [0, 1, 3], [0, 1, 2, 3], [2, 3], [3]]
    sampler = FairSampler(SPACE, seed=1, micro_batches=1)  # one child per update: the window spans updates
    children = [sampler(t, allowed=allowed) for t in range(12)]
    for layer, options in enumerate(allowed):
        for start in range(0, 12 - len(options) + 1, len(options)):
            window = [c[layer] for c in children[start:start + len(options)]]
            assert sorted(window) == sorted(options), (layer, start)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_fair_gradual_changes_exactly_k_layers(k):
    children, _ = walk(FairGradualSampler(SPACE, seed=5, gradual_k=k), SPACE, 400)
    assert all(hamming(a, b) == k for a, b in zip(children, children[1:]))


def test_fair_gradual_keeps_every_pair_near_its_fair_share():
    """Over a long run every (layer, operator) count stays within a few updates of
    its fair share and adjacent combinations stay near uniform, where MAGIC-T's
    walk drifts by tens of updates; and the walk does not settle into a cycle."""
    steps = 6000
    fair_children, fair = walk(FairGradualSampler(SPACE, seed=2, gradual_k=1), SPACE, steps)
    _, magic_t = walk(GradualSampler(SPACE, seed=2, gradual_k=1), SPACE, steps)
    worst = max(np.abs(fair.excess(layer)).max() for layer in range(SPACE.num_layers))
    assert worst <= 10, worst
    assert max(np.abs(magic_t.excess(layer)).max() for layer in range(SPACE.num_layers)) > 3 * worst
    assert fair.share_sd() < 0.01 and fair.adjacent_share_sd() < 0.03
    assert magic_t.share_sd() > 5 * fair.share_sd()
    _, uniform = walk(UniformSampler(SPACE, seed=2), SPACE, steps)
    assert fair.adjacent_share_sd() < uniform.adjacent_share_sd() / 2  # fairer than independent draws
    assert len(set(fair_children[-1000:])) > 700  # still random: no short cycle


def test_fair_gradual_in_grouped_and_shrunk_spaces():
    children, shares = walk(FairGradualSampler(GROUPED, seed=0, gradual_k=2), GROUPED, 3000)
    assert all(c[layer] in GROUPED.layer_options[layer] for c in children for layer in range(6))
    assert all(hamming(a, b) == 2 for a, b in zip(children, children[1:]))
    assert shares.share_sd() < 0.02
    allowed = [[0, 2], [1], [0, 1, 3], [0, 1, 2, 3], [2, 3], [3]]
    children, shares = walk(FairGradualSampler(SPACE, seed=0, gradual_k=1), SPACE, 2000, allowed)
    assert all(c[layer] in allowed[layer] for c in children[1:] for layer in range(6))
    assert shares.share_sd(allowed) < 0.02


def test_fair_gradual_is_a_pure_function_of_its_inputs():
    a, b = FairGradualSampler(SPACE, seed=1), FairGradualSampler(SPACE, seed=1)
    _, shares = walk(a, SPACE, 50)
    again = TrainingShares(SPACE, json.loads(json.dumps(shares.to_dict())))  # through the checkpoint's JSON
    prev = (0, 1, 2, 3, 0, 1)
    assert a(50, prev, shares=shares) == b(50, prev, shares=again)


@pytest.mark.parametrize("k", [0, 7])
def test_fair_gradual_k_out_of_range_is_a_clear_error(k):
    with pytest.raises(SpaceError, match="--gradual-k must be between 1 and the number of layers"):
        build_sampler("fair-gradual", SPACE, seed=0, gradual_k=k)


def test_training_shares_of_uniform_sampling_match_the_binomial():
    _, shares = walk(UniformSampler(SPACE, seed=0), SPACE, 3000)
    assert shares.total == 3000 and shares.adjacent.sum() == 3000 * 5
    assert shares.share_sd() == pytest.approx(np.sqrt(3 / 3000), rel=0.35)


# ---------------------------------------------------------------- through fairseq-train


def test_fair_gradual_resumes_exactly_and_logs_its_shares(data_bin, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    walk_args = ["--sampler", "fair-gradual", "--gradual-k", "2"]
    p_full = fairseq_train(data_bin, str(full), "--max-update", "10", "--child-log", str(full / "c.jsonl"), *walk_args)
    fairseq_train(data_bin, str(split), "--max-update", "5", "--child-log", str(split / "c.jsonl"), *walk_args)
    fairseq_train(data_bin, str(split), "--max-update", "10", "--child-log", str(split / "c.jsonl"), *walk_args)
    log_full = read_child_log(str(full / "c.jsonl"))
    assert log_full == read_child_log(str(split / "c.jsonl"))  # children and weight checksums
    children = [SPACE.parse(r["child"]) for r in log_full]
    assert all(hamming(a, b) == 2 for a, b in zip(children, children[1:]))
    state = json.loads(bytes(load_state(str(full / "checkpoint_last.pt"))["model"]["search_state"].tolist()).decode())
    shares = TrainingShares(SPACE, state["visits"])
    assert shares.total == 10 and state["last_child"] == SPACE.format(children[-1])
    assert all("share_sd" in r and "adjacent_share_sd" in r for r in train_log(p_full))


def test_the_fair_walk_on_two_gloo_ranks_agrees(data_bin, tmp_path):  # FairNAS on gloo: test_fairnas.py
    log = str(tmp_path / "children.jsonl")
    launch_ranks(data_bin, str(tmp_path), log, 4, extra=["--sampler", "fair-gradual"])
    strip = [{k: v for k, v in r.items() if k != "rank"} for r in read_child_log(log)]
    assert strip == [{k: v for k, v in r.items() if k != "rank"} for r in read_child_log(log + ".rank1")]
    assert len(strip) == 4


@pytest.mark.parametrize("extra,message", [
    (["--sampler", "fair", "--gradual-k", "2"], "--gradual-k is MAGIC-T's; it needs --sampler gradual or fair-gradual"),
    (["--sampler", "fair-gradual", "--gradual-k", "7"], "--gradual-k must be between 1 and the number of layers (6)"),
    (["--sampler", "fairnas"], "unknown sampler 'fairnas' (choose from fair, fair-gradual, gradual, uniform)"),
])
def test_bad_sampler_settings_fail_clearly(data_bin, tmp_path, extra, message):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "2", *extra, check=False)
    assert_one_error_line(proc, message)
    assert not (tmp_path / "checkpoint_last.pt").exists()


# ---------------------------------------------------------------- MAGIC-T's gradual walk
def gradual_walk(sampler, steps):
    children, previous = [], None
    for t in range(steps):
        previous = sampler(t, previous)
        children.append(previous)
    return children


@pytest.mark.parametrize("k", [1, 3, 6])
def test_gradual_children_differ_in_exactly_k_layers(k):
    children = gradual_walk(GradualSampler(SPACE, seed=5, gradual_k=k), 500)
    assert all(hamming(a, b) == k for a, b in zip(children, children[1:]))


def test_gradual_walk_visits_operators_uniformly():
    """Consecutive children of the walk are correlated (a layer keeps its operator
    for about N steps), which chi-square does not allow for; so the walk is thinned
    beyond its mixing time: per layer the chain keeps its state with eigenvalue
    1 - (k/N) C/(C-1) = 0.9, and 0.9**(5N) = 0.002."""
    space = SearchSpace.build(12, "MHA6,MHA8,FFN,FFN832,CONV3,CONV5", hidden_dim=768, ffn_dim=768, qkv_dim=384)
    thin = 5 * space.num_layers
    children = np.array(gradual_walk(GradualSampler(space, seed=0, gradual_k=1), 2000 * thin))[thin::thin]
    for layer in range(space.num_layers):
        counts = np.bincount(children[:, layer], minlength=space.num_candidates)
        # Bonferroni over the layers; a stuck or biased walk fails by orders of magnitude
        assert chisquare(counts).pvalue > 0.01 / space.num_layers, (layer, counts)


def test_gradual_is_a_pure_function_of_seed_update_and_previous():
    a, b = GradualSampler(SPACE, seed=1), GradualSampler(SPACE, seed=1)
    prev = (0, 1, 2, 3, 0, 1)
    assert a(17, prev) == b(17, prev)
    assert a(17, prev) != a(18, prev) or a(19, prev) != a(18, prev)


@pytest.mark.parametrize("k", [0, -1, 7])
def test_gradual_k_out_of_range_is_a_clear_error(k):
    with pytest.raises(SpaceError, match="--gradual-k must be between 1 and the number of layers"):
        build_sampler("gradual", SPACE, seed=0, gradual_k=k)
