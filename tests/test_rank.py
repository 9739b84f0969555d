"""Rank correlation: the statistics, and sample / train / correlate on tiny data."""

import json

import pytest

from conftest import magic
from fairseq_magic.errors import MagicError
from fairseq_magic.rank import correlation


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
    magic("rank", "train", "--dir", str(children), "--data", data_bin, "--train-args", budget)
    truth = json.loads((children / "truth.json").read_text())
    assert sorted(truth) == sorted(names) and all(v["valid_loss"] > 0 for v in truth.values())
    again = magic("rank", "train", "--dir", str(children), "--data", data_bin, "--train-args", budget)
    assert "training child" not in again.stdout + again.stderr  # resumable: finished children are skipped
    proc = magic("rank", "correlate", "--dir", str(children), "--checkpoints", supernet, supernet,
                 "--labels", "a,b", "--out", str(tmp_path / "table"), "--sentences", "16", "--cpu")
    result = json.loads((tmp_path / "table" / "rank.json").read_text())
    assert result["supernets"]["a"]["tau"] == result["supernets"]["b"]["tau"]
    assert -1 <= result["supernets"]["a"]["tau"] <= 1 and (tmp_path / "table" / "scatter_a.png").exists()
    assert "Kendall's tau over 4 children" in proc.stdout


def test_rank_rejects_a_list_from_another_space(supernet, tmp_path):
    (tmp_path / "list.txt").write_text("MHA2,FFN\n")
    proc = magic("rank", "sample", "--checkpoint", supernet, "--out", str(tmp_path / "c"), "--list",
                 str(tmp_path / "list.txt"), check=False)
    assert proc.returncode == 1 and "architecture has 2 layers, the space has 6" in proc.stderr
