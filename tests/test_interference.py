"""The interference instrument: gradient cosine similarities on a frozen super-net."""

import json

import numpy as np
import pytest
import torch
from fairseq import checkpoint_utils

from conftest import fairseq_train, magic
from fairseq_magic.errors import MagicError
from fairseq_magic.analysis.interference import cosine_matrix, differing_children, gradient, measure
from fairseq_magic.search.scoring import validation_batches


@pytest.fixture(scope="module")
def frozen(supernet):
    [model], _, task = checkpoint_utils.load_model_ensemble_and_task([supernet])
    return model, validation_batches(task, "valid", 16, 16)


def test_matrix_is_symmetric_with_ones_on_the_diagonal_and_deterministic(frozen):
    model, batches = frozen
    before = {k: v.clone() for k, v in model.state_dict().items() if k != "search_state"}
    a = measure(model, batches, layer=1, max_m=3, repeats=2, seed=4)
    b = measure(model, batches, layer=1, max_m=3, repeats=2, seed=4)
    assert a.matrix.shape == (4, 4)
    np.testing.assert_array_equal(a.matrix, a.matrix.T)
    np.testing.assert_allclose(np.diag(a.matrix), 1.0, atol=1e-12)
    assert np.array_equal(a.matrix, b.matrix) and a.mean_by_m == b.mean_by_m  # no dropout, no drift
    assert sorted(a.mean_by_m) == [1, 2, 3] and sorted(a.se_by_m) == [1, 2, 3] and a.repeats == 2
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # weights untouched
    assert all(p.grad is None for p in model.parameters())


def test_identical_children_have_similarity_one(frozen):
    model, batches = frozen
    child = (0, 1, 2, 3, 0, 1)
    params = model.operator_parameters(0, 0)
    g = [gradient(model, child, params, batches) for _ in range(2)]
    other = gradient(model, (0, 2, 2, 3, 0, 1), params, batches)
    sim = cosine_matrix(g + [other])
    assert sim[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert sim[0, 2] < 1 - 1e-6  # a different child at layer 1 pulls another way


def test_children_differ_exactly_in_the_chosen_layers():
    rng = np.random.default_rng(0)
    base = (0, 1, 2, 3, 0, 1)
    children = differing_children(base, layer=1, m=3, options=[range(4)] * 6, rng=rng)
    assert [c[2] for c in children] == [0, 1, 2, 3]
    assert all(c[:2] == base[:2] and c[5:] == base[5:] for c in children)


def test_bad_layers_are_an_error(frozen):
    model, batches = frozen
    with pytest.raises(MagicError, match="has no next layer"):
        measure(model, batches, layer=5, max_m=1, repeats=1, seed=0)
    with pytest.raises(MagicError, match="m must be between 1 and 2 for layer 3"):
        measure(model, batches, layer=3, max_m=3, repeats=1, seed=0)


def test_interference_command_compares_two_supernets(supernet, tmp_path):
    proc = magic("interference", "--checkpoint", supernet, "--compare", supernet, "--labels", "a,b",
                 "--layers", "0,2", "--max-m", "2", "--repeats", "1", "--sentences", "8", "--out", str(tmp_path),
                 terminal=True)
    for name in ("similarity_heatmaps.png", "similarity_heatmaps.pdf", "similarity_vs_m.png", "similarity_vs_m.pdf",
                 "similarity_vs_m.csv", "a_layer0_similarity.csv"):
        assert (tmp_path / name).exists()
    summary = json.loads((tmp_path / "interference.json").read_text())
    assert summary["a/layer0"] == summary["b/layer0"]  # the same checkpoint twice: the same numbers
    assert summary["a/layer0"]["repeats"] == 1 and set(summary["a/layer0"]["se_by_m"]) == {"1", "2"}
    assert "matrices, plots and CSV files in" in proc.stdout
    assert "similarity matrices: 100%" in proc.stderr and "| 8/8 [" in proc.stderr  # 2 nets x 2 layers x m 1..2
    piped = magic("interference", "--checkpoint", supernet, "--layers", "0", "--repeats", "1", "--sentences", "8",
                  "--out", str(tmp_path / "piped"))
    assert "similarity matrices" not in piped.stderr  # into a pipe or a file: no bar redrawn line after line


def test_interference_names_each_layers_own_candidates_in_a_grouped_space(data_bin, tmp_path):
    """In a grouped space layer j+1's candidates depend on j: each matrix is labelled with its own."""
    fairseq_train(data_bin, str(tmp_path / "net"), "--max-update", "2", "--candidate-ops", "MHA2,MHA4|FFN16,FFN32,FFN")
    magic("interference", "--checkpoint", str(tmp_path / "net" / "checkpoint_last.pt"), "--labels", "g",
          "--layers", "0,1", "--repeats", "1", "--sentences", "8", "--out", str(tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / "interference.json").read_text())
    assert summary["g/layer0"]["candidates"] == ["FFN16", "FFN32", "FFN"]  # layer 1 takes the FFN group
    assert summary["g/layer1"]["candidates"] == ["MHA2", "MHA4"]  # layer 2 the MHA group
    assert len(summary["g/layer0"]["matrix"]) == 3 and len(summary["g/layer1"]["matrix"]) == 2
    header = (tmp_path / "out" / "g_layer1_similarity.csv").read_text().splitlines()[0]
    assert header == "candidate at layer j+1,MHA2,MHA4"
