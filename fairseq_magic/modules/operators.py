"""The candidate operators, each wrapped as a BERT post-LN sub-layer, and the
super-net layer that holds them.

Every sub-layer computes ``LayerNorm(x + dropout(op(x)))`` on tensors laid out
as fairseq's encoder passes them: ``(T, B, C)``, with a ``(B, T)`` padding mask
that is True at padding (or None when the batch has no padding).

One family of operators serves every space. Each is built at its largest size
and runs at that size by default (a candidate of a plain space, a stand-alone
child); a weight-entangled space (``entangled.py``) also runs it at a smaller
size, a slice of the same weights (AutoFormer, OFA, HAT), or as the TangleNAS
superposition of several sizes:

* ``SelfAttention``  MHA<h>: the first ``h`` heads (fixed head width), i.e. the
  first ``h * head_dim`` rows of the Q/K/V projections and columns of the
  output projection;
* ``FeedForward``    FFN<d>: the first ``d`` inner units;
* ``SeparableConv``  CONV<k>: the centre ``k`` taps of the depthwise kernel
  (the pointwise projections are shared whole).

``sizes`` is None (the full operator), an int (one slice) or a list with
``weights`` (the superposition: one forward of the full operator whose
weights are ``sum_i w_i * pad(W[:d_i])``; zero-padding a slice is a 0/1 mask,
so cost and memory stay those of one operator and ``w`` gets gradients).

Parameter counts are what ``SearchSpace.operator_params`` says; a test checks
the two agree.
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.modules import LayerNorm

from ..errors import MagicError
from ..space import Operator, SearchSpace

Tensor = torch.Tensor
Sizes = Union[None, int, Sequence[int]]


def size_mask(sizes: Sequence[int], weights: Tensor, length: int) -> Tensor:
    """``sum_i weights[i] * [j < sizes[i]]`` for j < ``length``: the superposed prefix mask."""
    positions = torch.arange(length, device=weights.device)
    covers = (positions[None, :] < torch.tensor(list(sizes), device=weights.device)[:, None]).to(weights.dtype)
    return (weights[:, None] * covers).sum(0)


def centre_taps(max_kernel: int, kernel: int) -> slice:
    """The taps of a ``kernel``-wide convolution inside a ``max_kernel``-wide one."""
    centre = max_kernel // 2
    return slice(centre - kernel // 2, centre + kernel // 2 + 1)


class SelfAttention(nn.Module):
    """MHA<h>: up to ``max_heads`` heads of ``head_dim`` each."""

    def __init__(self, embed_dim: int, max_heads: int, head_dim: int, attention_dropout: float):
        super().__init__()
        self.max_heads, self.head_dim = max_heads, head_dim
        self.attention_dropout = attention_dropout
        width = max_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, width)
        self.k_proj = nn.Linear(embed_dim, width)
        self.v_proj = nn.Linear(embed_dim, width)
        self.out_proj = nn.Linear(width, embed_dim)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor], sizes: Sizes = None,
                weights: Optional[Tensor] = None) -> Tensor:
        scale = None
        if weights is not None:  # superposition over head counts, a mask per head expanded to its columns
            heads = self.max_heads
            scale = size_mask(sizes, weights, self.max_heads).repeat_interleave(self.head_dim)
        else:
            heads = self.max_heads if sizes is None else sizes
        w = heads * self.head_dim

        def project(linear: nn.Linear) -> Tensor:
            if w == linear.out_features and scale is None:
                return linear(x)
            weight, bias = linear.weight[:w], linear.bias[:w]
            if scale is not None:
                weight, bias = weight * scale[:, None], bias * scale
            return F.linear(x, weight, bias)

        T, B, _ = x.shape

        def split(t: Tensor) -> Tensor:  # (T, B, H*D) -> (B, H, T, D)
            return t.view(T, B, heads, self.head_dim).permute(1, 2, 0, 3)

        q, k, v = split(project(self.q_proj)), split(project(self.k_proj)), split(project(self.v_proj))
        attend = None if padding_mask is None else ~padding_mask[:, None, None, :]  # (B, 1, 1, T)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.attention_dropout if self.training else 0.0
        )
        y = y.permute(2, 0, 1, 3).reshape(T, B, w)  # (T, B, H*D)
        if w == self.out_proj.in_features and scale is None:
            return self.out_proj(y)
        out_weight = self.out_proj.weight[:, :w]
        if scale is not None:
            out_weight = out_weight * scale[None, :]
        return F.linear(y, out_weight, self.out_proj.bias)


class FeedForward(nn.Module):
    """FFN<d>: Linear(C, d) -> activation -> dropout -> Linear(d, C), as in BERT; up to ``max_inner`` units."""

    def __init__(self, embed_dim: int, max_inner: int, activation_fn: str, activation_dropout: float):
        super().__init__()
        self.max_inner = max_inner
        self.fc1 = nn.Linear(embed_dim, max_inner)
        self.fc2 = nn.Linear(max_inner, embed_dim)
        self.activation_fn = utils.get_activation_fn(activation_fn)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor], sizes: Sizes = None,
                weights: Optional[Tensor] = None) -> Tensor:
        if weights is None and sizes in (None, self.max_inner):
            return self.fc2(self.activation_dropout(self.activation_fn(self.fc1(x))))
        if weights is None:
            d = sizes
            w1, b1, w2 = self.fc1.weight[:d], self.fc1.bias[:d], self.fc2.weight[:, :d]
        else:
            scale = size_mask(sizes, weights, self.max_inner)
            w1, b1, w2 = self.fc1.weight * scale[:, None], self.fc1.bias * scale, self.fc2.weight * scale[None, :]
        h = self.activation_dropout(self.activation_fn(F.linear(x, w1, b1)))
        return F.linear(h, w2, self.fc2.bias)


class SeparableConv(nn.Module):
    """CONV<k>: pointwise projection, depthwise convolution of width k along the
    sequence, GELU, pointwise projection (a separable convolution, App. A.1);
    up to ``max_kernel`` taps.

    Padding positions are zeroed before the depthwise convolution, so a real
    token's window never reads padding; sequence ends are zero-padded.
    """

    def __init__(self, embed_dim: int, max_kernel: int):
        super().__init__()
        self.max_kernel = max_kernel
        self.in_proj = nn.Linear(embed_dim, embed_dim)
        self.depthwise = nn.Conv1d(embed_dim, embed_dim, max_kernel, padding=max_kernel // 2, groups=embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor], sizes: Sizes = None,
                weights: Optional[Tensor] = None) -> Tensor:
        if weights is not None:  # a tap at distance r from the centre belongs to every kernel wider than 2r
            distance = (torch.arange(self.max_kernel, device=weights.device) - self.max_kernel // 2).abs()
            covers = (distance[None, :] <= torch.tensor([k // 2 for k in sizes], device=weights.device)[:, None])
            scale = (weights[:, None] * covers.to(weights.dtype)).sum(0)
            kernel, padding = self.depthwise.weight * scale, self.max_kernel // 2
        else:
            size = self.max_kernel if sizes is None else sizes
            kernel, padding = self.depthwise.weight[:, :, centre_taps(self.max_kernel, size)], size // 2
        x = self.in_proj(x)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.transpose(0, 1).unsqueeze(-1), 0.0)
        x = F.conv1d(x.permute(1, 2, 0), kernel, self.depthwise.bias, padding=padding, groups=x.size(-1))
        return self.out_proj(F.gelu(x.permute(2, 0, 1)))  # (B,C,T) -> (T,B,C)


class Sublayer(nn.Module):
    """BERT post-LN sub-layer around one operator: LayerNorm(x + dropout(op(x)))."""

    def __init__(self, op: nn.Module, embed_dim: int, dropout: float):
        super().__init__()
        self.op = op
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = LayerNorm(embed_dim)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor], sizes: Sizes = None,
                weights: Optional[Tensor] = None) -> Tensor:
        return self.layer_norm(x + self.dropout(self.op(x, padding_mask, sizes, weights)))


def build_sublayer(op: Operator, space: SearchSpace, cfg, cls=None) -> Sublayer:
    """Candidate ``op`` as a sub-layer of its own size (of class ``cls``, default
    Sublayer); ``cfg`` carries dropouts and activation."""
    d = space.hidden_dim
    if op.kind == "MHA":
        body = SelfAttention(d, op.size, space.attention_width(op) // op.size, cfg.attention_dropout)
    elif op.kind == "FFN":
        body = FeedForward(d, op.size, cfg.activation_fn, cfg.activation_dropout)
    else:
        body = SeparableConv(d, op.size)
    return (cls or Sublayer)(body, d, cfg.dropout)


class ChildLayer(Sublayer):
    """A stand-alone child's layer: one operator, called as fairseq's encoder calls layers.

    Its parameters are named as the chosen candidate's in the super-net, less the
    ``candidates.<c>.`` level, so exporting a child is a renaming of keys."""

    def upgrade_state_dict_named(self, state_dict, name):
        """Called by fairseq's encoder on load; this layout has had no older format."""

    def forward(self, x: Tensor, encoder_padding_mask: Optional[Tensor] = None, attn_mask=None) -> Tensor:
        return super().forward(x, encoder_padding_mask)


class SupernetLayer(nn.Module):
    """One super-net layer: it runs either the chosen child's candidate
    (``active``) or, for gradient-based search, a *mixture*: the sum of
    ``weights[c] * candidate_c(x)`` over the candidates ``c`` listed to run
    (DARTS; GDAS lists only the sampled one). A chosen child takes precedence.

    Subclasses say where the candidates' weights live: ``CandidateLayer`` (one
    sub-layer per candidate) and ``entangled.EntangledSupernetLayer`` (one per
    operator kind, shared by its sizes). Only what runs computes, holds
    activations and receives gradients."""

    def __init__(self, space: SearchSpace, layer: int):
        super().__init__()
        self.space, self.index = space, layer
        self.active: Optional[int] = None
        self.mixture: Optional[Tuple[Tensor, List[int]]] = None  # (weights (C,), candidates to run)

    def upgrade_state_dict_named(self, state_dict, name):
        """Called by fairseq's encoder on load; this layout has had no older format."""

    def forward(self, x: Tensor, encoder_padding_mask: Optional[Tensor] = None, attn_mask=None) -> Tensor:
        if self.active is not None:
            return self.run_choice(self.active, x, encoder_padding_mask)
        if self.mixture is not None:
            weights, run = self.mixture
            return self.run_mixture(weights.to(x.dtype), run, x, encoder_padding_mask)
        raise MagicError("no child selected: call model.set_child(...) or give --child-arch")

    def run_choice(self, c: int, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def run_mixture(self, weights: Tensor, run: Sequence[int], x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def candidate_parameters(self, c: int) -> List[nn.Parameter]:
        """The parameters candidate ``c`` computes with."""
        raise NotImplementedError

    def unused_parameters(self, used: Sequence[int]) -> List[nn.Parameter]:
        """Parameters that none of the candidates ``used`` computes with."""
        raise NotImplementedError


class CandidateLayer(SupernetLayer):
    """A layer of a plain space: every candidate has its own sub-layer."""

    def __init__(self, space: SearchSpace, cfg, layer: int):
        super().__init__(space, layer)
        # keyed by candidate index: a layer holds only its own candidates (see SearchSpace.layer_options)
        self.candidates = nn.ModuleDict(
            {str(c): build_sublayer(space.candidates[c], space, cfg) for c in space.layer_options[layer]}
        )

    def candidate(self, c: int) -> nn.Module:
        return self.candidates[str(c)]

    def run_choice(self, c: int, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        return self.candidate(c)(x, padding_mask)

    def run_mixture(self, weights: Tensor, run: Sequence[int], x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        return sum(weights[c] * self.candidate(c)(x, padding_mask) for c in run)

    def candidate_parameters(self, c: int) -> List[nn.Parameter]:
        return list(self.candidate(c).parameters())

    def unused_parameters(self, used: Sequence[int]) -> List[nn.Parameter]:
        used = {str(c) for c in used}
        return [p for key, candidate in self.candidates.items() if key not in used for p in candidate.parameters()]


def embedded(sentence_encoder, tokens: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """fairseq's TransformerEncoder forward up to the first layer: the embedding of ``tokens``
    as the layers receive it, ``(T, B, C)`` with padding zeroed, and the padding mask (None
    without padding). The super-net's layer walks and ELECTRA's generator start here."""
    x, _ = sentence_encoder.forward_embedding(tokens)
    padding = tokens.eq(sentence_encoder.padding_idx)
    x = x * (1 - padding.unsqueeze(-1).type_as(x))
    return x.transpose(0, 1), (padding if padding.any() else None)
