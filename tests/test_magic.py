"""MAGIC-T, MAGIC-A and MAGIC-AT: samplers, anchor, alignment loss, training runs."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from conftest import (
    ROOT, assert_one_error_line, batch, build, fairseq_train, launch_ranks, load_state, read_child_log, run, train_log,
)
from fairseq_magic.alignment import aligned_layers
from fairseq_magic.anchor import Anchor, paired_comparison
from fairseq_magic.errors import MagicError
from fairseq_magic.scoring import score_children
from fairseq_magic.search_state import SearchState
from fairseq_magic.samplers import GradualSampler, build_sampler
from fairseq_magic.space import SearchSpace, SpaceError, hamming

SPACE = SearchSpace.build(6, "MHA2,FFN,CONV3,CONV5", hidden_dim=32, ffn_dim=64)
AT = [
    "--sampler", "gradual", "--gradual-k", "1", "--align-lambda", "0.5", "--align-every", "2",
    "--align-warmup-epochs", "0", "--anchor-eval-interval", "2", "--score-sentences", "16",
    "--anchor-metric", "loss", "--anchor-init-children", "6",
]


def walk(sampler, steps):
    children, previous = [], None
    for t in range(steps):
        previous = sampler(t, previous)
        children.append(previous)
    return children


@pytest.mark.parametrize("k", [1, 3, 6])
def test_gradual_children_differ_in_exactly_k_layers(k):
    children = walk(GradualSampler(SPACE, seed=5, gradual_k=k), 500)
    assert all(hamming(a, b) == k for a, b in zip(children, children[1:]))


def test_gradual_walk_visits_operators_uniformly():
    """Consecutive children of the walk are correlated (a layer keeps its operator
    for about N steps), which chi-square does not allow for; so the walk is thinned
    beyond its mixing time: per layer the chain keeps its state with eigenvalue
    1 - (k/N) C/(C-1) = 0.9, and 0.9**(5N) = 0.002."""
    space = SearchSpace.build(12, "MHA6,MHA8,FFN,FFN832,CONV3,CONV5", hidden_dim=768, ffn_dim=768, qkv_dim=384)
    thin = 5 * space.num_layers
    children = np.array(walk(GradualSampler(space, seed=0, gradual_k=1), 2000 * thin))[thin::thin]
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
    assert state["replacements"] == 1


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
    assert anchor.state["replacements"] == 2


def test_aligned_layers_every_b_without_the_final_layer():
    assert aligned_layers(26, 4) == [4, 8, 12, 16, 20, 24]
    assert aligned_layers(12, 4) == [4, 8]  # H_12 is the final layer's output: distillation, not alignment
    assert aligned_layers(12, 4, final=True) == [4, 8, 12]
    assert aligned_layers(6, 2) == [2, 4]


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


def test_alignment_term_is_a_batch_size_independent_mse(data_bin):
    """align_loss / sample_size equals the mean MSE summed over the aligned
    layers, and duplicating the batch leaves it unchanged."""
    cfg, task, model = build(data_bin, *AT, "--dropout", "0", "--attention-dropout", "0", "--align-batch-fraction", "1",
                             "--align-dropout", "train-eval", "--anchor-arch", "FFN,MHA2,CONV3,FFN,CONV5,MHA2")
    criterion = task.build_criterion(cfg.criterion)
    model.train()  # no dropout: the check below recomputes both sides exactly
    tokens = batch(model, batch_size=4, length=16)
    tokens[2, 10:] = model.encoder.dictionary.pad()
    target = torch.full_like(tokens, model.encoder.dictionary.pad())
    target[:, 3:7] = tokens[:, 3:7]
    sample = {"net_input": {"src_tokens": tokens}, "target": target, "ntokens": 64, "nsentences": 4}
    model.set_child(task.strategy.child_for_update(0))
    task.alignment.begin_update(model, 0)
    _, sample_size, log = criterion(model, sample)
    per_token = float(log["align_loss"]) / float(sample_size)
    layers = aligned_layers(6, 2)
    targets = task.alignment.targets(model, tokens)
    _, extra = model(tokens, features_only=True, return_all_hiddens=True)
    keep = tokens.ne(1).t().unsqueeze(-1).float()
    expected = sum(float((((extra["inner_states"][n] - t) ** 2) * keep).sum() / (keep.sum() * 32)) for n, t in zip(layers, targets))
    assert per_token == pytest.approx(expected, rel=1e-4) and expected > 0
    doubled = {"net_input": {"src_tokens": tokens.repeat(2, 1)}, "target": target.repeat(2, 1), "ntokens": 128, "nsentences": 8}
    _, size2, log2 = criterion(model, doubled)
    assert float(log2["align_loss"]) / float(size2) == pytest.approx(per_token, rel=1e-4)


@pytest.mark.parametrize("mode", ["clean", "train-eval"])
def test_clean_alignment_measures_representations_not_dropout(data_bin, mode):
    """With dropout on, a child aligned to itself: the clean term is exactly 0 (the
    child's aligned states come from a dropout-free forward), the train-eval term is
    the dropout floor. Against another anchor the clean term is positive and has a
    gradient on the child's weights."""
    arch = "FFN,MHA2,CONV3,FFN,CONV5,MHA2"
    for anchor, expect_zero in ((arch, mode == "clean"), ("MHA2,FFN,CONV5,MHA2,CONV3,FFN", False)):
        cfg, task, model = build(data_bin, *AT, "--dropout", "0.3", "--align-dropout", mode, "--anchor-arch", anchor)
        criterion = task.build_criterion(cfg.criterion)
        model.train()
        tokens = batch(model, batch_size=4, length=16)
        target = torch.full_like(tokens, model.encoder.dictionary.pad())
        target[:, 3:7] = tokens[:, 3:7]
        sample = {"net_input": {"src_tokens": tokens}, "target": target, "ntokens": 64, "nsentences": 4}
        model.set_child(arch)
        task.alignment.begin_update(model, 0)
        loss, _, log = criterion(model, sample)
        assert (float(log["align_loss"]) == 0.0) == expect_zero, (anchor, float(log["align_loss"]))
        if anchor != arch and mode == "clean":
            model.zero_grad()
            task.alignment.loss(model, tokens, None).backward()
            ffn = model.layers[0].candidate(model.space.candidate_names.index("FFN"))
            assert ffn.op.fc1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["clean", "train-eval"])
def test_batch_fraction_aligns_a_seeded_half_of_the_sentences(data_bin, mode):
    """--align-batch-fraction 0.5 on 8 sentences: the alignment's forwards see 4 of
    them and the term is the mean of those 4 sentences' own terms; the same update
    draws the same 4 (a resumed run, every rank), and over updates every sentence
    is drawn."""
    child, anchor = "FFN,MHA2,CONV3,FFN,CONV5,MHA2", "MHA2,FFN,CONV5,MHA2,CONV3,FFN"
    _, task, model = build(data_bin, *AT, "--dropout", "0", "--attention-dropout", "0", "--align-dropout", mode,
                           "--anchor-arch", anchor, "--align-batch-fraction", "0.5")
    model.train()
    tokens = batch(model, batch_size=8, length=16)
    assert len({tuple(row.tolist()) for row in tokens}) == 8
    model.set_child(child)
    alignment = task.alignment
    seen = []  # the sentences the alignment's own forwards (the anchor's, and clean's child) are given
    forward = model.hidden_states

    def watched(src_tokens, *args, **kwargs):
        seen.append(src_tokens)
        return forward(src_tokens, *args, **kwargs)

    model.hidden_states = watched

    def term(rows, update):
        alignment.begin_update(model, update)
        states = model(rows, features_only=True, return_all_hiddens=True)[1]["inner_states"]
        seen.clear()
        with torch.no_grad():
            value = float(alignment.loss(model, rows, states))
        used = {i for i in range(len(tokens)) for given in seen for row in given if torch.equal(row, tokens[i])}
        assert all(len(given) == len(used) for given in seen)
        return value, used

    single = [term(tokens[i:i + 1], 0)[0] for i in range(8)]  # one sentence: the fraction keeps it
    drawn = []
    for update in range(12):
        value, used = term(tokens, update)
        assert len(used) == 4
        assert value == pytest.approx(np.mean([single[i] for i in used]), rel=1e-5)
        assert term(tokens, update) == (value, used)  # the same update, the same sentences
        drawn.append(frozenset(used))
    assert len(set(drawn)) > 1 and set().union(*drawn) == set(range(8))


def test_clean_target_reuses_the_prefix_it_shares_with_the_child_exactly(data_bin):
    """The anchor's targets start from the layers it shares with the running child:
    the same numbers, to the bit, as the anchor's own full forward."""
    child = "FFN,MHA2,CONV3,FFN,CONV5,MHA2"
    for anchor in ("FFN,MHA2,CONV5,MHA2,CONV3,FFN", "MHA2,MHA2,CONV3,FFN,CONV5,MHA2", child):
        _, task, model = build(data_bin, *AT, "--dropout", "0.3", "--anchor-arch", anchor)
        model.train()
        tokens = batch(model, batch_size=4, length=16)
        tokens[1, 12:] = model.encoder.dictionary.pad()
        model.set_child(child)
        task.alignment.begin_update(model, 0)
        alignment = task.alignment
        with torch.no_grad():
            model.eval()
            states = model.hidden_states(tokens, upto=max(alignment.layers))
            reused = alignment.targets(model, tokens, child_states=states)
            full = alignment.targets(model, tokens)
            model.train()
        assert all(torch.equal(a, b) for a, b in zip(reused, full)), anchor
        assert model.child == model.space.parse(child) and model.training  # nothing left changed


def test_lambda_schedule(data_bin):
    _, task, _ = build(data_bin, *AT, "--max-update", "100", "--align-lambda-schedule", "linear-decay",
                       "--align-decay-fraction", "0.25")
    weights = []
    for update in (0, 75, 90, 100):
        task.alignment.update_num = update
        weights.append(task.alignment.weight)
    assert weights == pytest.approx([0.5, 0.5, 0.2, 0.0])
    _, task, _ = build(data_bin, *AT, "--max-update", "100")
    task.alignment.update_num = 99
    assert task.alignment.weight == 0.5  # constant: the paper's
    with pytest.raises(MagicError, match="linear-decay needs --max-update"):
        build(data_bin, *AT, "--align-lambda-schedule", "linear-decay")


def test_alignment_setup_is_logged_and_validation_shows_the_dropout_floor(data_bin, tmp_path):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "4", *AT, "--validate-interval-updates", "4")
    out = proc.stdout + proc.stderr
    setup = [line for line in out.splitlines() if "MAGIC-A: lambda 0.5" in line]
    assert len(setup) == 1 and "aligned layers H_2, H_4 of 6 (not the final layer)" in setup[0]
    valid = [json.loads(line[line.index("{"):]) for line in out.splitlines() if "| valid |" in line]
    assert valid and float(valid[-1]["valid_align_floor"]) > 0 and float(valid[-1]["valid_align_gap"]) >= 0


def test_interference_during_training_is_logged_and_leaves_training_alone(data_bin, tmp_path):
    plain = fairseq_train(data_bin, str(tmp_path / "a"), "--max-update", "4")
    probed = fairseq_train(data_bin, str(tmp_path / "b"), "--max-update", "4", "--interference-interval", "2")
    records = train_log(probed)
    assert [r["loss"] for r in records] == [r["loss"] for r in train_log(plain)]
    cos = [float(r["interference_cos"]) for r in records if r.get("interference_cos") is not None]
    assert cos and all(-1.0 <= c <= 1.0 for c in cos) and "interference_s" in records[-1]


def test_magic_t_training_changes_k_operators_per_update(data_bin, tmp_path):
    log = str(tmp_path / "children.jsonl")
    fairseq_train(data_bin, str(tmp_path), "--max-update", "12", "--sampler", "gradual", "--gradual-k", "2",
                  "--update-freq", "2", "--child-log", log)
    records = read_child_log(log)
    children = [SPACE.parse(r["child"]) for r in records[::2]]
    assert [r["child"] for r in records[::2]] == [r["child"] for r in records[1::2]]  # micro-batches agree
    assert len(children) == 12 and all(hamming(a, b) == 2 for a, b in zip(children, children[1:]))


def test_magic_a_logs_mlm_and_alignment_losses_after_warmup(data_bin, tmp_path):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "8", "--align-lambda", "0.5",
                         "--align-every", "2", "--align-warmup-epochs", "0", "--align-warmup-updates", "4",
                         "--anchor-eval-interval", "4", "--score-sentences", "16", "--anchor-init-children", "5")
    records = train_log(proc)
    assert all("align_loss" not in r for r in records[:4])
    assert all(float(r["align_loss"]) > 0 and "mlm_loss" in r for r in records[4:])
    # perplexity is the masked-LM loss's, not the total's (which carries the alignment term)
    assert all(float(r["ppl"]) == pytest.approx(2 ** float(r["mlm_loss"]), rel=1e-3) for r in records[4:])
    out = proc.stdout + proc.stderr
    assert "anchor kept against" in out or "anchor replaced by" in out
    assert "anchor_eval_s" in records[7]  # the cost of scoring is in the log


def test_average_alignment_target(data_bin, tmp_path):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "4", "--align-lambda", "0.5",
                         "--align-every", "3", "--align-warmup-epochs", "0", "--align-target", "average",
                         "--align-avg-children", "3")
    assert all(float(r["align_loss"]) > 0 for r in train_log(proc))
    assert "magic_masked_lm | anchor" not in proc.stdout + proc.stderr  # no anchor is kept or scored


def test_magic_at_resume_is_exact(data_bin, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    # children part quickly, the first anchor is weak, any improvement replaces it (the old rule, ablation 2)
    # and it is checked every update, so that the anchor changes in both halves
    at = [*AT, "--lr", "0.005", "--anchor-replace-z", "0", "--anchor-eval-interval", "1",
          "--anchor-arch", "CONV5,CONV5,CONV5,CONV5,CONV5,CONV5"]
    p_full = fairseq_train(data_bin, str(full), "--max-update", "12", "--child-log", str(full / "c.jsonl"), *at)
    fairseq_train(data_bin, str(split), "--max-update", "6", "--child-log", str(split / "c.jsonl"), *at)
    p_res = fairseq_train(data_bin, str(split), "--max-update", "12", "--child-log", str(split / "c.jsonl"), *at)
    log_full, log_split = read_child_log(str(full / "c.jsonl")), read_child_log(str(split / "c.jsonl"))
    assert log_full == log_split  # children, anchors and weight checksums
    anchors = [r["anchor"] for r in log_full]
    assert len(set(anchors[:6])) > 1 and len(set(anchors[6:])) > 1, "the anchor should change in both halves"
    keys = ("loss", "mlm_loss", "align_loss")
    assert [[r[k] for k in keys] for r in train_log(p_full)][6:] == [[r[k] for k in keys] for r in train_log(p_res)]
    a = load_state(str(full / "checkpoint_last.pt"))["model"]
    b = load_state(str(split / "checkpoint_last.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["search_state"].numel() > 0


def test_first_anchor_chosen_after_a_resume_is_the_uninterrupted_runs(data_bin, tmp_path):
    at = [*AT, "--align-warmup-updates", "4"]  # alignment (and the first anchor's choice) starts after the stop
    full, split = tmp_path / "full", tmp_path / "split"
    fairseq_train(data_bin, str(full), "--max-update", "6", "--child-log", str(full / "c.jsonl"), *at)
    fairseq_train(data_bin, str(split), "--max-update", "3", "--child-log", str(split / "c.jsonl"), *at)
    p_res = fairseq_train(data_bin, str(split), "--max-update", "6", "--child-log", str(split / "c.jsonl"), *at)
    log_full, log_split = read_child_log(str(full / "c.jsonl")), read_child_log(str(split / "c.jsonl"))
    assert log_full == log_split and "anchor" not in log_full[3] and "anchor" in log_full[4]
    assert "the best of 6 children scored with the shared weights at update 4" in p_res.stdout + p_res.stderr


def test_magic_at_two_gloo_ranks_agree(data_bin, tmp_path):
    log = str(tmp_path / "children.jsonl")
    launch_ranks(data_bin, str(tmp_path), log, 6, extra=AT)
    rank0, rank1 = read_child_log(log), read_child_log(log + ".rank1")
    strip = [{k: v for k, v in r.items() if k != "rank"} for r in rank0]
    assert strip == [{k: v for k, v in r.items() if k != "rank"} for r in rank1]  # children, anchors, weights
    assert len(rank0) == 6 and len({r["weights"] for r in rank0}) == 6


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--sampler", "gradual", "--gradual-k", "9"], "--gradual-k must be between 1 and the number of layers (6)"),
        (["--align-lambda", "0.5", "--align-every", "7", "--align-warmup-epochs", "0"], "--align-every 7 exceeds the 6 layers"),
        (["--align-lambda", "0.5", "--align-every", "6"], "--align-every 6 leaves no layer to align below the final one"),
        (["--align-lambda", "0.5", "--anchor-replace-z", "-1"], "--anchor-replace-z must be >= 0, got -1.0"),
        (["--align-lambda", "0.5", "--anchor-arch", "MHA2,FFN"], "architecture has 2 layers"),
        (["--align-lambda", "0.5", "--align-batch-fraction", "1.5"], "--align-batch-fraction must be in (0, 1], got 1.5"),
    ],
)
def test_bad_magic_settings_fail_clearly(data_bin, tmp_path, extra, message):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "2", *extra, check=False)
    assert_one_error_line(proc, message)
    assert not (tmp_path / "checkpoint_last.pt").exists()


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


def test_search_state_reads_and_writes_the_checkpoint_names():
    """The search state is saved as it always was (last_update, last_child, anchor, ...),
    so checkpoints of earlier versions resume; holders of the object see a load."""
    state = SearchState()
    anchor = Anchor(SPACE, state, seed=0)
    saved = {"last_update": 7, "last_child": "FFN,FFN,MHA2,CONV3,CONV5,FFN", "allowed": [[0, 1]] * 6,
             "anchor": {"arch": "FFN,FFN,FFN,FFN,FFN,FFN", "score": -5.0, "replacements": 2}, "from_a_later_version": 1}
    state.load_dict(saved)
    assert (state.update, state.child, state.allowed) == (7, saved["last_child"], saved["allowed"])
    assert anchor.chosen and anchor.child == (1,) * 6
    assert state.to_dict() == {k: v for k, v in saved.items() if k != "from_a_later_version"}
    state.load_dict({})
    assert state == SearchState() and not anchor.chosen
