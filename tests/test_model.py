"""The super-net model, built through fairseq's own option parsing."""

import pytest
import torch

from conftest import batch, build
from fairseq_magic.errors import MagicError
from fairseq_magic.training.frozen import hidden_from_optimizer
from fairseq_magic.space import SpaceError


def candidate_params(model):
    return {id(p) for layer in model.layers for cand in layer.candidates.values() for p in cand.parameters()}


@pytest.mark.parametrize("factor", ["0", "16"])
def test_child_parameter_count_matches_space(data_bin, factor):
    _, task, model = build(data_bin, "--embed-factor-dim", factor)
    space = model.space
    in_candidates = candidate_params(model)
    shared = sum(p.numel() for p in model.parameters() if id(p) not in in_candidates)
    vocab = len(task.source_dictionary)
    for child in [(0,) * 6, (1, 2, 3, 0, 1, 2), (3,) * 6]:
        model.set_child(child)
        active = sum(p.numel() for layer, c in zip(model.layers, child) for p in layer.candidate(c).parameters())
        assert shared + active == space.params(child, vocab_size=vocab, max_positions=32)


def test_only_the_sampled_operators_receive_gradients(data_bin):
    _, _, model = build(data_bin)
    child = model.set_child("MHA2,FFN,CONV3,CONV5,FFN,MHA2")
    logits, _ = model(batch(model))
    logits.float().pow(2).mean().backward()
    for layer, choice in zip(model.layers, child):
        for i, cand in enumerate(layer.candidates.values()):
            grads = [p.grad for p in cand.parameters()]
            if i == choice:
                assert all(g is not None and g.abs().sum() > 0 for g in grads)
            else:
                assert all(g is None for g in grads)


def test_forward_returns_every_layer_output(data_bin):
    _, _, model = build(data_bin)
    model.set_child((0, 1, 2, 3, 0, 1))
    tokens = batch(model)
    _, extra = model(tokens, features_only=True, return_all_hiddens=True)
    states = extra["inner_states"]
    assert len(states) == 1 + model.space.num_layers  # embeddings, then H_1..H_N
    assert all(h.shape == (tokens.shape[1], tokens.shape[0], 32) for h in states)


@pytest.mark.parametrize("arch", ["CONV5,CONV5,CONV5,CONV3,CONV3,CONV3", "MHA2,MHA2,MHA2,FFN,MHA2,MHA2"])
def test_padding_does_not_leak_into_real_tokens(data_bin, arch):
    _, _, model = build(data_bin)
    model.eval()
    model.set_child(arch)
    tokens = batch(model, batch_size=1, length=10)
    padded = torch.cat([tokens, torch.full((1, 5), model.encoder.dictionary.pad())], dim=1)
    with torch.no_grad():
        plain, _ = model(tokens, features_only=True)
        with_pad, _ = model(padded, features_only=True)
    torch.testing.assert_close(with_pad[:, :10], plain, rtol=1e-5, atol=1e-5)


def test_hidden_parameters_and_their_adam_state_stay_untouched(data_bin):
    _, _, model = build(data_bin)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    model.set_child((0,) * 6)
    model(batch(model))[0].float().sum().backward()
    opt.step()  # every layer's candidate 0 now has Adam state
    opt.zero_grad()
    model.set_child((1,) * 6)
    before = {id(p): p.detach().clone() for p in model.inactive_parameters()}
    states = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in model.inactive_parameters() if p in opt.state}
    assert states, "candidate 0 should carry optimizer state from the first step"
    model(batch(model, seed=1))[0].float().sum().backward()
    for p in model.inactive_parameters():  # what legacy DDP does to missing gradients
        p.grad = torch.zeros_like(p)
    with hidden_from_optimizer(opt, model.inactive_parameters()):
        opt.step()
    for p in model.inactive_parameters():
        assert torch.equal(p, before[id(p)])
        for k, v in states.get(id(p), {}).items():
            assert torch.equal(opt.state[p][k], v)


def test_classification_head_and_hub_features(data_bin):
    _, _, model = build(data_bin, "--child-arch", "MHA2,FFN,MHA2,FFN,CONV3,FFN")
    model.register_classification_head("sentiment", num_classes=3)
    out, _ = model(batch(model), classification_head_name="sentiment")
    assert out.shape == (3, 3)


def test_bad_child_strings_fail_clearly(data_bin):
    _, _, model = build(data_bin)
    with pytest.raises(SpaceError, match="architecture has 2 layers, the space has 6"):
        model.set_child("MHA2,FFN")
    with pytest.raises(SpaceError, match="not a candidate"):
        model.set_child("MHA4,FFN,FFN,FFN,FFN,FFN")
    fresh = build(data_bin)[2]
    with pytest.raises(MagicError, match="no child selected"):
        fresh(batch(fresh))
