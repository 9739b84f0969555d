"""Ensembles of super-nets (search/ensemble.py): several checkpoints joined by '+' as one estimator in
``search`` and ``rank correlate``."""

import json

import numpy as np
import pytest

from conftest import assert_one_error_line, fairseq_train, magic


@pytest.fixture(scope="module")
def second_seed(data_bin, tmp_path_factory) -> str:
    """The fixture super-net's settings with another seed."""
    save = tmp_path_factory.mktemp("seed4")
    fairseq_train(data_bin, str(save), "--max-update", "6", "--embed-factor-dim", "16", "--seed", "4")
    return str(save / "checkpoint_last.pt")


def test_an_ensemble_estimates_the_mean_loss_of_its_members(supernet, second_seed, tmp_path):
    children = tmp_path / "children"
    magic("rank", "sample", "--checkpoint", supernet, "--out", str(children), "--children", "5", "--seed", "3")
    names = json.loads((children / "children.json").read_text())
    truth = {name: {"valid_loss": 5.0 + 0.1 * i, "valid_loss_by_seed": {"1": 5.0 + 0.1 * i}}
             for i, name in enumerate(names)}
    (children / "truth.json").write_text(json.dumps(truth))
    both = f"{supernet}+{second_seed}"
    magic("rank", "correlate", "--dir", str(children), "--checkpoints", supernet, second_seed, both,
          "--labels", "a,b,ensemble", "--out", str(tmp_path / "table"), "--sentences", "16", "--cpu")
    rows = json.loads((tmp_path / "table" / "rank.json").read_text())["supernets"]
    a, b, ensemble = (np.array(r["estimates"]) for r in rows)
    assert not np.allclose(a, b)  # two different estimators
    assert ensemble == pytest.approx((a + b) / 2, abs=1e-9)
    assert "share_sd" in rows[0] and "share_sd" not in rows[2]  # an ensemble has no one training count

    magic("search", "--checkpoint", both, "--out", str(tmp_path / "search"), "--algorithm", "random",
          "--children", "6", "--sentences", "16", "--cpu", "--seed", "1")
    record = json.loads((tmp_path / "search" / "search.json").read_text())
    assert [p.rsplit("/", 2)[-2] for p in record["ensemble"]] == [p.rsplit("/", 2)[-2] for p in (supernet, second_seed)]
    assert record["checkpoint"] == record["ensemble"][0]  # export takes the first member's weights


def test_an_ensemble_of_two_spaces_is_one_error_line(supernet, plain_supernet, tmp_path):
    proc = magic("search", "--checkpoint", f"{supernet}+{plain_supernet}", "--out", str(tmp_path / "s"),
                 "--algorithm", "random", "--children", "2", "--cpu", check=False)
    assert_one_error_line(proc, "the ensemble's super-nets search different spaces")
    assert not (tmp_path / "s" / "search.json").exists()
