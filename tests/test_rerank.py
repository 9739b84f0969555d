"""search --rerank K (search/rerank.py): the top K children trained briefly from their inherited weights,
the pick the best after that."""

import json

from conftest import assert_one_error_line, magic


def test_rerank_trains_the_top_children_from_their_inherited_weights(supernet, data_bin, tmp_path):
    out = tmp_path / "search"
    proc = magic("search", "--checkpoint", supernet, "--out", str(out), "--algorithm", "random", "--children", "5",
                 "--sentences", "16", "--cpu", "--rerank", "3", "--rerank-updates", "2", "--rerank-args",
                 "--batch-size 8 --tokens-per-sample 32")
    record = json.loads((out / "search.json").read_text())
    reranked = record["rerank"]["children"]
    assert [r["arch"] for r in reranked] == [row["arch"] for row in record["top"][:3]]  # the top 3, in order
    assert all(r["trained_loss"] > 0 for r in reranked)
    pick = min(reranked, key=lambda r: r["trained_loss"])["arch"]
    assert json.loads((out / "best.json").read_text())["arch"] == pick
    assert f"(re-ranked) written to {out / 'best.json'}: {pick}" in proc.stdout
    for rank in (1, 2, 3):  # each started from its export of the super-net's weights, with a fresh optimizer
        log = (out / "rerank" / f"rank{rank}" / "train.log").read_text()
        assert f"Loaded checkpoint {out / 'rerank' / f'rank{rank}' / 'inherited.pt'}" in log
        assert "num_updates 2" in log


def test_rerank_with_bad_training_options_is_one_error_line(supernet, tmp_path):
    proc = magic("search", "--checkpoint", supernet, "--out", str(tmp_path / "s"), "--algorithm", "random",
                 "--children", "2", "--sentences", "16", "--cpu", "--rerank", "1", "--rerank-args", "--lr 'x",
                 check=False)
    assert_one_error_line(proc, "--rerank-args: No closing quotation")
    assert not (tmp_path / "s" / "search.json").exists()
