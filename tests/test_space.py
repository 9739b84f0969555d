"""The search space as plain data: parsing, errors, sizes, files."""

import json

import pytest

from fairseq_magic.space import SearchSpace, SpaceError, hamming, load_child, save_child

ANALYSIS = SearchSpace.build(12, "MHA6,MHA8,FFN,FFN832,CONV3,CONV5", hidden_dim=768, ffn_dim=768, qkv_dim=384)
BASE = SearchSpace.build(26, "MHA12,FFN,CONV3,CONV5", hidden_dim=768, ffn_dim=3072, embed_dim=512)


@pytest.mark.parametrize(
    "name,paper",
    [("MHA6", 1.18e6), ("MHA8", 1.18e6), ("FFN", 1.18e6), ("FFN832", 1.28e6), ("CONV3", 1.18e6), ("CONV5", 1.19e6)],
)
def test_table6_operator_parameters(name, paper):
    op = ANALYSIS.candidates[ANALYSIS.candidate_names.index(name)]
    assert abs(ANALYSIS.operator_params(op) - paper) / paper < 0.02


def test_base_space_size_matches_paper():
    assert BASE.num_children == 4**26
    assert 4.4e15 < BASE.num_children < 4.6e15  # "about 4.5e15 child models"


def test_parse_and_format_round_trip():
    arch = ",".join(["MHA12", "FFN", "CONV3", "CONV5"] * 6 + ["FFN", "MHA12"])
    child = BASE.parse(arch)
    assert BASE.format(child) == arch
    # a bare FFN and its explicit size are the same operator
    assert BASE.parse(arch.replace("FFN", "FFN3072")) == child


@pytest.mark.parametrize(
    "arch,message",
    [
        ("", "empty architecture string"),
        ("   ", "empty architecture string"),
        ("MHA12,FFN", "architecture has 2 layers, the space has 26"),
        (",".join(["MHA12"] * 25 + ["ATTN4"]), "unknown operator 'ATTN4'"),
        (",".join(["MHA12"] * 25 + ["CONV7"]), "layer 25: operator 'CONV7' is not a candidate"),
        (",".join(["MHA12"] * 25 + ["MHA"]), "operator 'MHA' needs a size"),
        (",".join(["MHA12"] * 24 + ["", "FFN"]), "empty operator at layer 24"),
    ],
)
def test_bad_architectures_name_the_problem(arch, message):
    with pytest.raises(SpaceError, match=message):
        BASE.parse(arch)


@pytest.mark.parametrize(
    "ops,message",
    [
        ("MHA5,FFN", "5 heads do not divide the Q/K/V width 768"),
        ("MHA12,FFN,FFN3072", "listed twice"),
        ("CONV4", "kernel must be odd"),
        ("MHA12,,FFN", "empty candidate operator"),
        ("XYZ", "unknown operator 'XYZ'"),
    ],
)
def test_bad_spaces_name_the_problem(ops, message):
    with pytest.raises(SpaceError, match=message):
        SearchSpace.build(4, ops, hidden_dim=768, ffn_dim=3072)


def test_flops_grow_with_sequence_length_quadratically_only_for_attention():
    mha, ffn = BASE.candidates[0], BASE.candidates[1]
    assert BASE.operator_flops(ffn, 256) == 2 * BASE.operator_flops(ffn, 128)
    assert BASE.operator_flops(mha, 256) > 2 * BASE.operator_flops(mha, 128)
    child = BASE.parse(",".join(["MHA12", "FFN"] * 13))
    assert BASE.flops(child, 128) == 13 * (BASE.operator_flops(mha, 128) + BASE.operator_flops(ffn, 128))


def test_child_file_round_trip_and_foreign_space(tmp_path):
    child = ANALYSIS.parse("MHA6,MHA8,FFN,FFN832,CONV3,CONV5," * 1 + "MHA6,MHA6,MHA6,MHA6,MHA6,MHA6")
    path = tmp_path / "child.json"
    save_child(str(path), ANALYSIS, child)
    assert json.loads(path.read_text())["arch"].startswith("MHA6,MHA8")
    space, loaded = load_child(str(path), ANALYSIS)
    assert space == ANALYSIS and loaded == child
    with pytest.raises(SpaceError, match="belongs to another space"):
        load_child(str(path), BASE)
    with pytest.raises(SpaceError, match="not found"):
        load_child(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpaceError, match="not valid JSON"):
        load_child(str(tmp_path / "bad.json"))


def test_hamming():
    assert hamming((0, 1, 2), (0, 2, 2)) == 1


# ---------------------------------------------------------------- per-layer candidate groups
GROUPED = SearchSpace.build(5, "MHA2,MHA4|FFN64,FFN128,FFN", hidden_dim=32, ffn_dim=96)


def test_groups_take_turns_over_the_layers():
    assert GROUPED.candidate_names == ("MHA2", "MHA4", "FFN64", "FFN128", "FFN")
    assert GROUPED.layer_options == ((0, 1), (2, 3, 4), (0, 1), (2, 3, 4), (0, 1))
    assert GROUPED.num_children == 2 * 3 * 2 * 3 * 2
    child = GROUPED.parse("MHA4,FFN,MHA2,FFN64,MHA4")
    assert GROUPED.format(child) == "MHA4,FFN,MHA2,FFN64,MHA4"
    assert GROUPED.describe().startswith("5 layers x {MHA2, MHA4 | FFN64, FFN128, FFN}")
    with pytest.raises(SpaceError, match=r"layer 1: operator 'MHA2' is not a candidate of this layer \(candidates: FFN64, FFN128, FFN\)"):
        GROUPED.parse("MHA4,MHA2,MHA2,FFN64,MHA4")
    with pytest.raises(SpaceError, match="layer 0: 'FFN64' is not a candidate of this layer"):
        GROUPED.validate((2, 2, 0, 2, 0))
    with pytest.raises(SpaceError, match="3 candidate groups for 2 layers"):
        SearchSpace.build(2, "MHA2|FFN|CONV3", hidden_dim=32, ffn_dim=64)


def test_grouped_space_sizes_files_and_sampling(tmp_path):
    import numpy as np

    from fairseq_magic.training.samplers import build_sampler, count_children, uniform_child
    from fairseq_magic.search.evolution import mutate
    from fairseq_magic.training.shrinking import full_space

    layers = [sum(GROUPED.operator_params(GROUPED.candidates[c]) for c in options) for options in GROUPED.layer_options]
    assert GROUPED.supernet_params() == sum(layers)
    entangled = SearchSpace.build(5, "MHA2,MHA4|FFN64,FFN128,FFN", hidden_dim=32, ffn_dim=96, entangled=True)
    assert entangled.supernet_params() == 3 * entangled.operator_params(entangled.candidates[1]) + 2 * entangled.operator_params(entangled.candidates[3])
    save_child(str(tmp_path / "c.json"), GROUPED, (1, 4, 0, 2, 1))
    assert load_child(str(tmp_path / "c.json")) == (GROUPED, (1, 4, 0, 2, 1))
    rng = np.random.default_rng(0)
    assert count_children(GROUPED) == GROUPED.num_children and full_space(GROUPED) == [list(o) for o in GROUPED.layer_options]
    for name in ("uniform", "gradual"):
        sampler, previous = build_sampler(name, GROUPED, seed=1), None
        for update in range(50):
            previous = GROUPED.validate(sampler(update, previous))
    for _ in range(50):
        GROUPED.validate(uniform_child(GROUPED, rng))
        GROUPED.validate(mutate((1, 4, 0, 2, 1), GROUPED, 0.5, rng))


@pytest.mark.parametrize("vocab, paper", [(30522, 2.9e10), (50265, 3.3e10)])  # BERT-base, RoBERTa-base (Table 2)
def test_flops_of_the_base_layouts_are_the_papers(vocab, paper):
    """12 Transformer layers (an MHA12 and an FFN3072 layer each) at hidden 768 with the
    masked-LM head over the model's vocabulary, 128 tokens: the paper's Table 2 figures."""
    space = SearchSpace.build(24, "MHA12,FFN", hidden_dim=768, ffn_dim=3072)
    child = space.parse(",".join(["MHA12", "FFN"] * 12))
    assert space.flops(child, 128) == pytest.approx(2.24e10, rel=0.01)  # the encoder layers alone fall short
    assert space.flops(child, 128, vocab_size=vocab) == pytest.approx(paper, rel=0.03)
