"""Search: limits, evolution, random search, and the fairseq-magic search command."""

import json

import numpy as np
import pytest

from conftest import magic
from fairseq_magic.errors import MagicError
from fairseq_magic.search.evolution import Constraints, Limits, evolution, random_search
from fairseq_magic.space import SearchSpace, load_child

SPACE = SearchSpace.build(8, "MHA4,FFN,CONV3,CONV5", hidden_dim=64, ffn_dim=256)


def toy_score(children):
    """A known landscape: FFN (index 1) everywhere is best."""
    return [float(sum(c == 1 for c in child)) for child in children]


def test_evolution_respects_limits_and_is_reproducible():
    limits = Limits(max_params=SPACE.shared_params(100, 64) + 8 * 60000)
    constraints = Constraints(SPACE, limits, vocab_size=100, max_positions=64)
    runs = [evolution(toy_score, constraints, np.random.default_rng(7), population=20, generations=6, parents=5)
            for _ in range(2)]
    assert runs[0] == runs[1]  # same seed, same children, same order
    assert all(constraints.ok(c) for c in runs[0])
    other = evolution(toy_score, constraints, np.random.default_rng(8), population=20, generations=6, parents=5)
    assert set(other) != set(runs[0])
    first_gen = list(runs[0])[:20]
    assert max(runs[0].values()) > max(toy_score(first_gen))  # it improves on its first generation


def test_evolution_finds_the_optimum_without_limits():
    constraints = Constraints(SPACE, Limits(), vocab_size=100, max_positions=64)
    scores = evolution(toy_score, constraints, np.random.default_rng(0), population=30, generations=15, parents=8)
    assert max(scores.values()) == SPACE.num_layers


def test_random_search_scores_distinct_children_within_limits():
    # tight: only children with at most one non-convolution layer fit; plain rejection rarely hits them
    tight = Limits(max_flops=SPACE.flops((1,) + (3,) * 7, 128))
    constraints = Constraints(SPACE, tight, vocab_size=100, max_positions=64)
    scores = random_search(toy_score, constraints, np.random.default_rng(0), count=12)
    assert len(scores) == 12 and all(constraints.ok(c) for c in scores)


@pytest.mark.parametrize(
    "limits,message",
    [
        (Limits(max_params=1000), "no child can meet the parameter limits"),
        (Limits(min_params=1e12), "no child can meet the parameter limits"),
        (Limits(max_flops=10), "no child can meet the FLOPs limits"),
        (Limits(min_params=3e6, max_params=2e6), "no child can meet the parameter limits"),
    ],
)
def test_impossible_limits_are_an_error(limits, message):
    with pytest.raises(MagicError, match=message):
        Constraints(SPACE, limits, vocab_size=100, max_positions=64)


def test_search_command(supernet, tmp_path):
    args = ["search", "--checkpoint", supernet, "--population", "8", "--generations", "3", "--parents", "3",
            "--sentences", "16", "--seed", "5", "--no-progress-bar"]
    magic(*args, "--out", str(tmp_path / "a"))
    proc = magic(*args, "--out", str(tmp_path / "b"), "--max-params", "30000")
    a = json.loads((tmp_path / "a" / "search.json").read_text())
    b = json.loads((tmp_path / "b" / "search.json").read_text())
    assert a["scored"] == len(a["top"]) or a["scored"] >= 8
    assert all(row["params"] <= 30000 for row in b["top"])
    assert [r["loss"] for r in a["top"]] == sorted(r["loss"] for r in a["top"])
    space, best = load_child(str(tmp_path / "b" / "best.json"))
    assert space.format(best) == b["top"][0]["arch"]
    assert "best architecture written to" in proc.stdout
    again = magic(*args, "--out", str(tmp_path / "c"), "--max-params", "30000")
    assert json.loads((tmp_path / "c" / "search.json").read_text())["top"] == b["top"]  # seeded: reproducible
    assert again.returncode == 0


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--max-params", "100"], "no child can meet the parameter limits"),
        (["--checkpoint", "/nonexistent.pt"], "checkpoint not found"),
    ],
)
def test_search_bad_input(supernet, tmp_path, extra, message):
    proc = magic("search", "--checkpoint", supernet, "--out", str(tmp_path), "--no-progress-bar", *extra, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("fairseq-magic: error:") and message in proc.stderr


def test_search_reads_the_data_given_from_any_directory(data_bin, tmp_path):
    """A super-net trained on a relative data path records it absolute; --data replaces it (search, rank, interference)."""
    import shutil
    import subprocess
    import sys

    from conftest import COMMON, TINY, load_state

    work = tmp_path / "work"
    shutil.copytree(data_bin, work / "bin")
    subprocess.run([sys.executable, "-m", "fairseq_cli.train", "bin", *COMMON, *TINY, "--max-update", "2",
                    "--save-dir", "ckpt"], cwd=str(work), check=True, capture_output=True)
    checkpoint = str(work / "ckpt" / "checkpoint_last.pt")
    assert load_state(checkpoint)["cfg"]["task"]["data"] == str(work / "bin")
    args = ["--population", "4", "--generations", "1", "--parents", "2", "--sentences", "8", "--no-progress-bar"]
    magic("search", "--checkpoint", checkpoint, "--out", str(tmp_path / "a"), *args)  # from another directory
    shutil.move(str(work / "bin"), str(tmp_path / "moved"))
    proc = magic("search", "--checkpoint", checkpoint, "--out", str(tmp_path / "b"), *args, check=False)
    assert "no dict.txt in data directory" in proc.stderr
    magic("search", "--checkpoint", checkpoint, "--out", str(tmp_path / "b"), *args, "--data", str(tmp_path / "moved"))
    assert json.loads((tmp_path / "b" / "search.json").read_text())["top"]


@pytest.mark.parametrize("space", ["plain", "entangled"])
def test_shared_prefix_scoring_equals_one_forward_per_child(data_bin, tmp_path, space):
    """Scoring children as a walk over their layer prefixes gives exactly the numbers
    of one forward per child, duplicates and a batch with padding included."""
    import torch
    from fairseq import checkpoint_utils

    from conftest import fairseq_train
    from fairseq_magic.training.samplers import uniform_child
    from fairseq_magic.search.scoring import score_children, validation_batches

    extra = [] if space == "plain" else ["--weight-entanglement", "--candidate-ops", "MHA2,MHA4,FFN32,FFN64,CONV3"]
    fairseq_train(data_bin, str(tmp_path), "--max-update", "3", *extra)
    [model], _, task = checkpoint_utils.load_model_ensemble_and_task([str(tmp_path / "checkpoint_last.pt")])
    batches = validation_batches(task, "valid", 24, 8)
    padded = dict(batches[0], net_input=dict(batches[0]["net_input"]))  # the last two sentences cut short
    tokens = padded["net_input"]["src_tokens"].clone()
    tokens[-2:, -5:] = task.source_dictionary.pad()
    padded["net_input"]["src_tokens"] = tokens
    padded["target"] = padded["target"].masked_fill(tokens.eq(task.source_dictionary.pad()), task.source_dictionary.pad())
    rng = np.random.default_rng(0)
    children = [uniform_child(model.space, rng) for _ in range(12)]
    children += [children[3], children[0][:4] + children[5][4:]]  # a duplicate; a child sharing a long prefix
    model.train()
    shared = score_children(model, model, children, batches + [padded])
    assert model.training  # dropout was off while scoring, and the mode is restored
    alone = score_children(model, model, children, batches + [padded], shared_prefixes=False)
    assert torch.equal(torch.tensor(np.stack([s.per_sentence for s in shared])),
                       torch.tensor(np.stack([s.per_sentence for s in alone])))
    assert [s.loss for s in shared] == [s.loss for s in alone]


def test_a_sub_space_search_keeps_to_its_operators():
    """--candidate-ops in training's syntax: every scored child uses only those operators (a
    group per layer in turn), and the limits are checked against the sub-space's sizes."""
    from fairseq_magic.search.evolution import plain_transformers, sub_space

    allowed = sub_space(SPACE, "MHA4|FFN,CONV3")
    assert allowed == [[0], [1, 2]] * 4
    constraints = Constraints(SPACE, Limits(), vocab_size=100, max_positions=64, allowed=allowed)
    scores = evolution(toy_score, constraints, np.random.default_rng(0), population=10, generations=4, parents=4)
    assert all(c[0::2] == (0,) * 4 and set(c[1::2]) <= {1, 2} for c in scores)
    assert max(scores.values()) == 4  # FFN in every odd layer: the best of the sub-space
    assert plain_transformers(SPACE, allowed) == [(0, 1) * 4]
    assert plain_transformers(SPACE) == [(0, 1) * 4]  # one MHA and one FFN size in this space
    for ops, message in (("MHA8", "MHA8 is not a candidate of the super-net"), ("MHA4|", "has an empty group"),
                         ("CONV4", "the convolution kernel must be odd")):
        with pytest.raises(MagicError, match=message):
            sub_space(SPACE, ops)
    with pytest.raises(MagicError, match="no child can meet the parameter limits"):
        Constraints(SPACE, Limits(max_params=SPACE.shared_params(100, 64) + 8 * 30000), vocab_size=100,
                    max_positions=64, allowed=sub_space(SPACE, "FFN"))


def test_plain_transformer_search_exports_as_roberta_in_one_step(plain_supernet, tmp_path):
    magic("search", "--checkpoint", plain_supernet, "--out", str(tmp_path / "s"), "--plain-transformer",
          "--candidate-ops", "MHA2,MHA4,FFN,FFN32", "--sentences", "16")
    record = json.loads((tmp_path / "s" / "search.json").read_text())
    assert record["scored"] == 4 and record["algorithm"] == "all plain Transformers"  # {MHA2, MHA4} x {FFN, FFN32}
    magic("export", "--checkpoint", plain_supernet, "--arch", str(tmp_path / "s" / "best.json"), "--format", "roberta",
          "--out", str(tmp_path / "roberta" / "model.pt"))
    assert (tmp_path / "roberta" / "model.pt").is_file()
