"""Rank correlation: the statistics, and sample / train / correlate on tiny data."""

import json

import numpy as np
import pytest

from conftest import assert_one_error_line, magic
from fairseq_magic.errors import MagicError
from fairseq_magic.analysis.rank_correlation import compare_methods, correlation, top_of_ranking


def test_tau_of_a_list_with_itself_and_its_reverse():
    values = [0.3, 1.2, -0.5, 2.0, 0.9, 1.7]
    assert correlation(values, values)["tau"] == pytest.approx(1.0)
    assert correlation(values, values)["rho"] == pytest.approx(1.0)
    assert correlation(values, [-v for v in values])["tau"] == pytest.approx(-1.0)
    assert correlation(values, values)["tau_p"] < 0.05


def test_mismatched_lists_are_a_clear_error():
    with pytest.raises(MagicError, match="cannot correlate 3 estimates with 4 ground-truth values"):
        correlation([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(MagicError, match="at least 3 children"):
        correlation([1, 2], [2, 1])


def test_sample_train_correlate(supernet, data_bin, tmp_path):
    children = tmp_path / "children"
    magic("rank", "sample", "--checkpoint", supernet, "--out", str(children), "--children", "4", "--seed", "2")
    names = json.loads((children / "children.json").read_text())
    assert len(names) == 4 and len(set(names.values())) == 4
    budget = "--max-update 3 --batch-size 8 --tokens-per-sample 32 --optimizer adam --lr 1e-3 --cpu --num-workers 0"
    first = magic("rank", "train", "--dir", str(children), "--data", data_bin, "--train-args", budget)
    assert "ceiling (valid_loss): unknown, one seed per child" in first.stdout
    truth = json.loads((children / "truth.json").read_text())
    assert sorted(truth) == sorted(names) and all(v["valid_loss"] > 0 for v in truth.values())
    # a second seed per child, two at a time: only the new runs train; the truth is the mean
    second = magic("rank", "train", "--dir", str(children), "--data", data_bin, "--train-args", budget,
                   "--seeds", "1,2", "--max-parallel", "2")
    assert (second.stdout + second.stderr).count("started (local job") == 4
    assert ".seed1: started" not in second.stdout + second.stderr
    assert "trainings:" not in second.stderr  # no progress bar redrawn into a pipe or a file
    truth = json.loads((children / "truth.json").read_text())
    for record in truth.values():
        assert sorted(record["valid_loss_by_seed"]) == ["1", "2"]
        assert record["valid_loss"] == pytest.approx(sum(record["valid_loss_by_seed"].values()) / 2)
    ceiling = "ceiling (valid_loss): the same 4 children trained with 2 seeds agree with Kendall's tau"
    assert ceiling in second.stdout or f"WARNING: {ceiling}" in second.stderr  # 3 updates: often below 0.5
    assert "finetune_accuracy" not in second.stdout + second.stderr  # not measured: no ceiling line
    again = magic("rank", "train", "--dir", str(children), "--data", data_bin, "--train-args", budget, "--seeds", "1,2")
    assert "started (local job" not in again.stdout + again.stderr  # resumable: finished runs are skipped
    proc = magic("rank", "correlate", "--dir", str(children), "--checkpoints", supernet, supernet, supernet,
                 "--labels", "a,a,b", "--out", str(tmp_path / "table"), "--sentences", "16", "--cpu")
    result = json.loads((tmp_path / "table" / "rank.json").read_text())
    taus = [row["tau"] for row in result["supernets"]]
    assert len(taus) == 3 and taus[0] == taus[1] == taus[2] and -1 <= taus[0] <= 1
    methods = result["methods"]
    assert methods["a"]["n"] == 2 and methods["a"]["sd"] == 0.0 and methods["b"]["diff"] == 0.0
    assert result["ceiling"]["seeds"] == 2 and -1 <= result["ceiling"]["tau"] <= 1
    assert (tmp_path / "table" / "scatter_a_1.png").exists() and (tmp_path / "table" / "scatter_b.png").exists()
    assert (tmp_path / "table" / "scatter_b.pdf").exists()
    assert "Kendall's tau over 4 children" in proc.stdout and "ceiling (valid_loss): the same 4 children" in proc.stdout
    # the top of the ranking and the training shares, per super-net and per method
    row = result["supernets"][0]
    assert 1 <= row["best_true_rank"] <= 4 and 0 <= row["top_overlap"] <= 4 and row["regret"] >= 0
    assert 0 < row["share_sd"] < 2 and row["adjacent_share_sd"] > 0 and -1 <= row["over_training_rho"] <= 1
    assert methods["a"]["best_true_rank"] == row["best_true_rank"] and methods["a"]["regret_sd"] == 0.0


def test_top_of_ranking():
    truth = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.4]
    estimates = [0.0, 0.6, 0.1, 0.05, 0.8, 0.3, 0.2]  # ranks the truly second best first, misses the best
    top = top_of_ranking(estimates, truth, top=3)
    assert top == {"best_true_rank": 2, "top_overlap": 2, "regret": pytest.approx(0.2)}
    assert top_of_ranking(truth, truth) == {"best_true_rank": 1, "top_overlap": 5, "regret": 0.0}


def test_compare_methods_finds_a_better_ranker():
    """Mean and spread of tau over seeds, and the bootstrap over children says
    which method ranks better."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=40)
    good = [truth + rng.normal(scale=0.3, size=40) for _ in range(3)]
    poor = [truth + rng.normal(scale=3.0, size=40) for _ in range(3)]
    out = compare_methods({"poor": poor, "good": good}, truth, bootstrap=300)
    assert out["good"]["n"] == 3 and out["good"]["mean"] > 0.6 > out["poor"]["mean"]
    assert out["good"]["diff"] > 0.3 and out["good"]["boot_lo"] > 0 and out["good"]["boot_p"] < 0.01
    assert out["good"]["welch_p"] < 0.05 and out["poor"]["sd"] > 0
    assert out["good"]["paired_p"] < 0.05  # seed i of each method paired
    assert out["good"]["best_true_rank"] < out["poor"]["best_true_rank"]


def test_rank_rejects_a_list_from_another_space(supernet, tmp_path):
    (tmp_path / "list.txt").write_text("MHA2,FFN\n")
    proc = magic("rank", "sample", "--checkpoint", supernet, "--out", str(tmp_path / "c"), "--list",
                 str(tmp_path / "list.txt"), check=False)
    assert proc.returncode == 1 and "architecture has 2 layers, the space has 6" in proc.stderr


def test_a_ceiling_that_cannot_rank_is_a_warning():
    """Seeds agreeing below 0.5, or children that do not differ at all (a fine-tuning that left
    every child at the majority class), say so loudly; two children with two seeds are not
    'one seed per child'."""
    from fairseq_magic.analysis.rank_correlation import format_ceiling, seed_agreement

    def truth(values_by_seed):
        return {f"c{i}": {"finetune_accuracy_by_seed": {str(s + 1): v for s, v in enumerate(vs)}}
                for i, vs in enumerate(values_by_seed)}

    noisy = truth([[0.6, 0.7], [0.7, 0.6], [0.65, 0.62], [0.62, 0.66], [0.68, 0.61]])
    names = list(noisy)
    line = format_ceiling(seed_agreement(noisy, names, "finetune_accuracy"), "finetune_accuracy", noisy, names)
    assert line.startswith("WARNING: ceiling (finetune_accuracy)") and "cannot rank these children" in line
    flat = truth([[0.631, 0.631]] * 4)
    line = format_ceiling(seed_agreement(flat, list(flat), "finetune_accuracy"), "finetune_accuracy", flat, list(flat))
    assert line.startswith("WARNING") and "raise the fine-tuning --lr" in line
    two = truth([[0.6, 0.7], [0.7, 0.6]])
    line = format_ceiling(seed_agreement(two, list(two), "finetune_accuracy"), "finetune_accuracy", two, list(two))
    assert "only 2 children have two seeds" in line
    agreeing = truth([[0.1 * i, 0.1 * i + 0.01] for i in range(5)])
    line = format_ceiling(seed_agreement(agreeing, list(agreeing), "finetune_accuracy"), "finetune_accuracy")
    assert line.startswith("ceiling (finetune_accuracy): the same 5 children") and "tau 1.000" in line


@pytest.mark.parametrize("case", ["../escape", "/tmp/absolute", "seeds", "quote", "no-validation"])
def test_rank_train_refuses_what_would_escape_or_fail_late_in_one_line(supernet, data_bin, tmp_path, case):
    children = tmp_path / "children"
    magic("rank", "sample", "--checkpoint", supernet, "--out", str(children), "--children", "2")
    args = {"--seeds": "1", "--train-args": "--max-update 2 --cpu"}
    if case.startswith(("../", "/")):  # a children.json edited by hand (or by someone else)
        (children / "children.json").write_text(json.dumps(["child000", case]))
        expected = f'names the child "{case}": a child\'s name is a file name'
    else:
        args.update({"seeds": {"--seeds": "1,a"}, "quote": {"--train-args": "--lr '1e-3"},
                     "no-validation": {"--train-args": "--max-update 2 --disable-validation"}}[case])
        expected = {"seeds": "--seeds must list distinct integers >= 0", "quote": "--train-args: No closing quotation",
                    "no-validation": "cannot hold --disable-validation"}[case]
    proc = magic("rank", "train", "--dir", str(children), "--data", data_bin,
                 *[x for kv in args.items() for x in kv], check=False)
    assert_one_error_line(proc, expected)
    assert sorted(p.name for p in children.iterdir()) == ["child000.json", "child001.json", "children.json"]
    assert not (tmp_path / "escape").exists()
