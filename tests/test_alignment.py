"""MAGIC-A's alignment (training/alignment.py): aligned layers, the term, clean targets, the
schedule, and bad settings."""

import json

import numpy as np
import pytest
import torch

from conftest import assert_one_error_line, batch, build, fairseq_train, train_log
from fairseq_magic.training.alignment import aligned_layers
from fairseq_magic.errors import MagicError

AT = [
    "--sampler", "gradual", "--gradual-k", "1", "--align-lambda", "0.5", "--align-every", "2",
    "--align-warmup-epochs", "0", "--anchor-eval-interval", "2", "--score-sentences", "16",
    "--anchor-metric", "loss", "--anchor-init-children", "6",
]


def test_aligned_layers_every_b_without_the_final_layer():
    assert aligned_layers(26, 4) == [4, 8, 12, 16, 20, 24]
    assert aligned_layers(12, 4) == [4, 8]  # H_12 is the final layer's output: distillation, not alignment
    assert aligned_layers(12, 4, final=True) == [4, 8, 12]
    assert aligned_layers(6, 2) == [2, 4]


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
