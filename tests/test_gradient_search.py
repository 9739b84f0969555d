"""Gradient-based search (DARTS / GDAS relaxations, GAEA) and weight-entangled
spaces with TangleNAS superposition."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import (
    assert_one_error_line, batch, build, fairseq_train, launch_ranks, load_state, magic, read_child_log, train_log,
)
from fairseq_magic.errors import MagicError
from fairseq_magic.models.state_format import arch_weights_state
from fairseq_magic.modules.operators import FeedForward, SeparableConv, size_mask
from fairseq_magic.training.arch_weights import ArchitectureWeights, entropy_of, gumbel_noise, theta_from_state
from fairseq_magic.space import SearchSpace, load_child

ENTANGLED = ["--weight-entanglement", "--candidate-ops", "MHA2,MHA4,FFN32,FFN64,CONV3,CONV5",
             "--attention-qkv-dim", "32"]
# BERT-like: layers alternate elastic attention and elastic FFN, one kind (one operator) per layer
BERT_TANGLE = ["--weight-entanglement", "--candidate-ops", "MHA2,MHA4|FFN32,FFN64", "--attention-qkv-dim", "32"]


# ---------------------------------------------------------------- the optimisers on a toy problem
def toy_problem(seed=0, layers=3, candidates=4, best=2, dim=8):
    """A chain whose layers mix fixed linear maps; the data are made by candidate ``best``."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(layers, candidates, dim, dim, generator=g) / math.sqrt(dim)
    x = torch.randn(64, dim, generator=g)

    def forward(theta):
        h = x
        for l in range(layers):
            h = torch.einsum("c,cij,bj->bi", theta[l], maps[l], h)
        return h

    target = forward(F.one_hot(torch.full((layers,), best), candidates).float())
    return lambda theta: F.mse_loss(forward(theta), target)


def optimise(method, lr, steps=300):
    loss_of = toy_problem()
    arch = ArchitectureWeights(3, 4, method, lr)
    history = []
    for _ in range(steps):
        (grad,) = torch.autograd.grad(loss_of(arch.theta()), [arch.param])
        arch.step(grad)
        theta = arch.theta().detach()
        history.append((entropy_of(theta), theta))
    return arch, history


def test_gaea_keeps_theta_on_the_simplex_and_lowers_entropy():
    arch, history = optimise("gaea", lr=2.0)
    for _, theta in history:
        assert (theta >= 0).all()
        assert torch.allclose(theta.sum(-1), torch.ones(3), atol=1e-6)
    entropies = [h for h, _ in history]
    assert entropies[0] < math.log(4)
    assert all(later <= earlier + 1e-6 for earlier, later in zip(entropies[::50], entropies[50::50]))
    assert entropies[-1] < 0.1 * math.log(4)  # nearly one-hot: the argmax child is the mixture
    assert arch.argmax() == (2, 2, 2)


def test_gaea_survives_steps_far_too_large():
    """A huge step saturates theta at a vertex; it must not underflow to 0/0."""
    arch, history = optimise("gaea", lr=1e6, steps=20)
    for _, theta in history:
        assert torch.isfinite(theta).all() and torch.allclose(theta.sum(-1), torch.ones(3), atol=1e-6)
    assert history[-1][0] == 0.0


@pytest.mark.parametrize("method,lr", [("darts-adam", 0.05), ("darts-sgd", 0.5)])
def test_darts_finds_the_best_operator_on_the_toy(method, lr):
    arch, history = optimise(method, lr)
    assert arch.argmax() == (2, 2, 2)
    assert history[-1][0] < math.log(4)


def test_gdas_runs_one_candidate_and_passes_gradients_to_all():
    arch = ArchitectureWeights(3, 4, "gaea")
    weights, chosen = arch.gdas(gumbel_noise(np.random.default_rng(0), (3, 4)), tau=1.0)
    assert torch.equal(weights.detach(), F.one_hot(torch.tensor(chosen), 4).float())
    (weights * torch.arange(12.0).view(3, 4)).sum().backward()
    assert (arch.param.grad != 0).all()


def test_architecture_state_round_trips_with_its_optimizer():
    a = ArchitectureWeights(2, 3, "darts-adam", 0.1)
    a.step(torch.randn(2, 3))
    b = ArchitectureWeights(2, 3, "darts-adam", 0.1)
    b.load_state_dict(a.state_dict())
    grad = torch.randn(2, 3)
    a.step(grad)
    b.step(grad)
    assert torch.equal(a.param, b.param)
    assert torch.equal(theta_from_state(a.state_dict()), a.theta().detach())
    with pytest.raises(MagicError, match="trained with --arch-optimizer darts-adam, not gaea"):
        ArchitectureWeights(2, 3, "gaea").load_state_dict(a.state_dict())


# ---------------------------------------------------------------- weight entanglement
def test_entangled_supernet_holds_the_largest_choice_of_each_kind(data_bin):
    _, _, model = build(data_bin, *ENTANGLED)
    space = model.space
    assert space.entangled and space.head_dim == 8  # Q/K/V 32 over the largest MHA's 4 heads
    layer_params = sum(p.numel() for layer in model.layers for p in layer.parameters())
    largest = [space.largest(kind, 0) for kind in ("MHA", "FFN", "CONV")]
    assert [op.name for op in largest] == ["MHA4", "FFN64", "CONV5"]
    assert layer_params == space.supernet_params() == 6 * sum(space.operator_params(op) for op in largest)
    separate = SearchSpace.build(6, "MHA2,MHA4,FFN32,FFN64,CONV3,CONV5", 32, 64, 32, head_dim=8)
    assert layer_params < separate.supernet_params()


@pytest.mark.parametrize("space", [ENTANGLED, BERT_TANGLE], ids=["kinds", "bert"])
def test_superposition_with_one_hot_theta_is_the_chosen_child(data_bin, space):
    from fairseq_magic.training.samplers import uniform_child

    _, _, model = build(data_bin, *space)
    model.eval()
    tokens = batch(model, length=14)
    tokens[1, 9:] = model.encoder.dictionary.pad()
    C, options = model.space.num_candidates, model.space.layer_options
    rng = np.random.default_rng(0)
    for child in [tuple(o[0] for o in options), tuple(o[-1] for o in options)] + [
            uniform_child(model.space, rng) for _ in range(3)]:
        model.set_child(child)
        chosen = model(tokens)[0]
        model.set_mixture(F.one_hot(torch.tensor(child), C).float(), options)
        assert torch.equal(model(tokens)[0], chosen)


def test_bert_like_entangled_layers_hold_one_operator_each(data_bin):
    _, _, model = build(data_bin, *BERT_TANGLE)
    assert [list(layer.kinds) for layer in model.layers] == [["MHA"], ["FFN"]] * 3
    assert sum(p.numel() for layer in model.layers for p in layer.parameters()) == model.space.supernet_params()
    with pytest.raises(MagicError, match="layer 1: operator 'MHA2' is not a candidate of this layer"):
        model.set_child("MHA2,MHA2,MHA2,FFN32,MHA4,FFN64")


def test_superposition_is_one_forward_with_the_weighted_sum_of_padded_slices():
    torch.manual_seed(0)
    x = torch.randn(7, 2, 16)
    weights = torch.tensor([0.2, 0.5, 0.3])
    ffn = FeedForward(16, 48, "gelu", 0.0)
    sizes = [12, 30, 48]
    pad = lambda w, d: F.pad(w[:d], (0, 0, 0, w.size(0) - d))  # zero rows beyond d  # noqa: E731
    w1 = sum(t * pad(ffn.fc1.weight, d) for t, d in zip(weights, sizes))
    b1 = sum(t * F.pad(ffn.fc1.bias[:d], (0, 48 - d)) for t, d in zip(weights, sizes))
    w2 = sum(t * pad(ffn.fc2.weight.t(), d).t() for t, d in zip(weights, sizes))
    expected = F.linear(F.gelu(F.linear(x, w1, b1)), w2, ffn.fc2.bias)
    assert torch.allclose(ffn(x, None, sizes, weights), expected, atol=1e-6)

    conv = SeparableConv(16, 7)
    kernel = sum(t * F.pad(conv.depthwise.weight[:, :, 3 - k // 2:4 + k // 2], (3 - k // 2, 3 - k // 2))
                 for t, k in zip(weights, [3, 5, 7]))
    h = conv.in_proj(x).permute(1, 2, 0)
    expected = conv.out_proj(F.gelu(F.conv1d(h, kernel, conv.depthwise.bias, padding=3, groups=16).permute(2, 0, 1)))
    assert torch.allclose(conv(x, None, [3, 5, 7], weights), expected, atol=1e-6)
    assert torch.allclose(size_mask([2, 4], torch.tensor([0.25, 0.75]), 5), torch.tensor([1, 1, 0.75, 0.75, 0]))


def test_entangled_space_trains_with_magic_t_and_its_child_exports_exactly(data_bin, tmp_path):
    """SPOS/MAGIC sampling on an entangled space; the exported child is a plain
    magic_child (sliced weights) that computes what the super-net computes."""
    from fairseq import checkpoint_utils

    fairseq_train(data_bin, str(tmp_path), "--max-update", "5", "--sampler", "gradual", *ENTANGLED,
                  "--child-log", str(tmp_path / "c.jsonl"))
    children = [r["child"] for r in read_child_log(str(tmp_path / "c.jsonl"))]
    assert len(children) == 5 and all(sum(a != b for a, b in zip(x.split(","), y.split(","))) == 1
                                      for x, y in zip(children, children[1:]))
    arch = "MHA2,FFN32,CONV3,MHA4,FFN64,CONV5"
    magic("export", "--checkpoint", str(tmp_path / "checkpoint_last.pt"), "--arch", arch, "--out", str(tmp_path / "child.pt"))
    [supernet], _ = checkpoint_utils.load_model_ensemble([str(tmp_path / "checkpoint_last.pt")])
    [child], _ = checkpoint_utils.load_model_ensemble([str(tmp_path / "child.pt")])
    assert type(child).__name__ == "MagicChildModel"
    supernet.set_child(arch)
    supernet.eval(), child.eval()
    tokens = batch(supernet, length=16)
    tokens[2, 10:] = supernet.encoder.dictionary.pad()
    logits, extra = supernet(tokens, return_all_hiddens=True)
    child_logits, child_extra = child(tokens, return_all_hiddens=True)
    assert torch.allclose(logits, child_logits, atol=1e-5)
    for a, b in zip(extra["inner_states"], child_extra["inner_states"]):
        assert torch.allclose(a, b, atol=1e-5)
    space = supernet.space
    child_layers = sum(p.numel() for layer in child.encoder.sentence_encoder.layers for p in layer.parameters())
    assert child_layers == space.layer_params(space.parse(arch))
    # search counts an entangled child's parameters as its slices
    magic("search", "--checkpoint", str(tmp_path / "checkpoint_last.pt"), "--out", str(tmp_path / "search"),
          "--algorithm", "random", "--children", "4", "--sentences", "16", "--no-progress-bar")
    best_space, best = load_child(str(tmp_path / "search" / "best.json"))
    assert best_space == space and json_params(tmp_path / "search" / "best.json") == space.params(
        best, vocab_size=len(supernet.encoder.dictionary), max_positions=supernet.args.max_positions)


def json_params(path):
    return json.loads(path.read_text())["params"]


# ---------------------------------------------------------------- fairseq-train end to end
def arch_entropies(proc):
    return [float(r["arch_entropy"]) for r in train_log(proc)]


@pytest.mark.parametrize(
    "name,extra",
    [
        ("gaea-bilevel", ["--relaxation", "mixture", "--arch-optimizer", "gaea", "--arch-lr", "20"]),
        ("darts-erm", ["--relaxation", "mixture", "--arch-optimizer", "darts-adam", "--arch-lr", "0.05",
                       "--arch-objective", "erm"]),
        ("gdas-sgd", ["--relaxation", "gdas", "--arch-optimizer", "darts-sgd", "--arch-lr", "1"]),
        ("tangle-gaea-erm", ["--relaxation", "mixture", "--arch-optimizer", "gaea", "--arch-lr", "1000",
                             "--arch-objective", "erm", *BERT_TANGLE]),
    ],
)
def test_relaxed_search_trains_logs_and_derives_its_argmax_child(data_bin, tmp_path, name, extra):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "8", *extra)
    out = proc.stdout + proc.stderr
    entropies = arch_entropies(proc)
    assert len(entropies) == 8 and all(0 < h <= math.log(2 if "tangle" in name else 4) + 1e-4 for h in entropies)
    if "gaea" in name:
        assert entropies[-1] < entropies[0]
    assert "architecture in epoch 1 after 8 updates: mean entropy" in out and "valid_mixture_loss" in out

    state = load_state(str(tmp_path / "checkpoint_last.pt"))["model"]
    theta = theta_from_state(arch_weights_state(state))
    assert torch.allclose(theta.sum(-1), torch.ones(6), atol=1e-5)
    derived = magic("derive", str(tmp_path / "checkpoint_last.pt"), "-o", str(tmp_path / "argmax.json"))
    space, child = load_child(str(tmp_path / "argmax.json"))
    assert child == tuple(int(c) for c in theta.argmax(-1))
    assert f"argmax child {space.format(child)}" in derived.stdout
    # the architecture file is what export (and search) take
    magic("export", "--checkpoint", str(tmp_path / "checkpoint_last.pt"), "--arch", str(tmp_path / "argmax.json"),
          "--out", str(tmp_path / "child.pt"))


def test_relaxed_search_resumes_exactly(data_bin, tmp_path):
    """theta, its Adam state, the held-out batches and the Gumbel draws all resume."""
    gdas = ["--relaxation", "gdas", "--arch-optimizer", "darts-adam", "--arch-lr", "0.05", "--arch-batch-size", "4"]
    full, split = tmp_path / "full", tmp_path / "split"
    fairseq_train(data_bin, str(full), "--max-update", "10", "--child-log", str(full / "c.jsonl"), *gdas)
    fairseq_train(data_bin, str(split), "--max-update", "5", "--child-log", str(split / "c.jsonl"), *gdas)
    fairseq_train(data_bin, str(split), "--max-update", "10", "--child-log", str(split / "c.jsonl"), *gdas)
    log_full = read_child_log(str(full / "c.jsonl"))
    assert log_full == read_child_log(str(split / "c.jsonl"))
    assert len({r["child"] for r in log_full}) > 1 and log_full[0]["theta"] != log_full[-1]["theta"]
    a = load_state(str(full / "checkpoint_last.pt"))["model"]
    b = load_state(str(split / "checkpoint_last.pt"))["model"]
    assert "arch_weights.optim.exp_avg" in a
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_relaxed_search_two_gloo_ranks_agree(data_bin, tmp_path):
    log = str(tmp_path / "c.jsonl")
    launch_ranks(data_bin, str(tmp_path), log, 4, extra=["--relaxation", "mixture", "--arch-lr", "20"])
    rank0, rank1 = read_child_log(log), read_child_log(log + ".rank1")
    strip = [{k: v for k, v in r.items() if k != "rank"} for r in rank0]
    assert strip == [{k: v for k, v in r.items() if k != "rank"} for r in rank1]  # theta and weights
    assert len(rank0) == 4 and rank0[0]["theta"] != rank0[-1]["theta"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--relaxation", "mixture", "--align-lambda", "0.5"], "trains no single child to align"),
        (["--relaxation", "mixture", "--arch-subset", "nosuchsplit"], "--arch-subset nosuchsplit"),
        (["--relaxation", "gdas", "--shrink-per-epoch", "2"], "does not combine with --shrink-per-epoch"),
        (["--weight-entanglement", "--candidate-ops", "MHA3,MHA4,FFN", "--attention-qkv-dim", "30"],
         "4 heads (the largest MHA) do not divide the Q/K/V width 30"),
    ],
)
def test_bad_relaxation_settings_fail_clearly(data_bin, tmp_path, extra, message):
    proc = fairseq_train(data_bin, str(tmp_path), "--max-update", "2", *extra, check=False)
    assert_one_error_line(proc, message)
    assert not (tmp_path / "checkpoint_last.pt").exists()


def test_derive_needs_a_relaxed_checkpoint(supernet, tmp_path):
    proc = magic("derive", supernet, "-o", str(tmp_path / "a.json"), check=False)
    assert proc.returncode != 0 and "has no architecture weights" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "a.json").exists()
