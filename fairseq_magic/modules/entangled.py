"""Weight-entangled operators: the candidates of one kind share one weight tensor.

Each module holds the weights of its kind's largest candidate; a smaller
choice computes with a slice of them (AutoFormer, OFA, HAT):

* ``EntangledAttention``  MHA<h>: the first ``h`` heads (fixed head width),
  i.e. the first ``h * head_dim`` rows of the Q/K/V projections and columns of
  the output projection;
* ``EntangledFeedForward`` FFN<d>: the first ``d`` inner units;
* ``EntangledConv``        CONV<k>: the centre ``k`` taps of the depthwise kernel
  (the pointwise projections are shared whole).

Every module runs either one choice (``sizes`` an int: a child, as SPOS and
MAGIC train it) or the TangleNAS *superposition* of several (``sizes`` a list
with ``weights``): one forward of the largest operator whose weights are the
weighted sum of the choices' zero-padded slices,
``W_mix = sum_i w_i * pad(W[:d_i])``. Zero-padding a slice is multiplying by a
0/1 mask, so ``W_mix = W * sum_i w_i * mask_i``: cost and memory stay those of
one operator, and the weights ``w`` receive gradients.

``slice_state`` cuts a choice's weights out of the shared tensors, with the
names the ordinary operators of ``operators.py`` use, so an entangled child
exports as a plain ``magic_child``.
"""

from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils

from ..space import Operator, SearchSpace
from .operators import Sublayer, SupernetLayer

Tensor = torch.Tensor
Sizes = Union[int, Sequence[int]]


def size_mask(sizes: Sequence[int], weights: Tensor, length: int) -> Tensor:
    """``sum_i weights[i] * [j < sizes[i]]`` for j < ``length``: the superposed prefix mask."""
    positions = torch.arange(length, device=weights.device)
    covers = (positions[None, :] < torch.tensor(list(sizes), device=weights.device)[:, None]).to(weights.dtype)
    return (weights[:, None] * covers).sum(0)


def centre_taps(max_kernel: int, kernel: int) -> slice:
    """The taps of a ``kernel``-wide convolution inside a ``max_kernel``-wide one."""
    centre = max_kernel // 2
    return slice(centre - kernel // 2, centre + kernel // 2 + 1)


def slice_state(space: SearchSpace, layer: int, op: Operator, name: str, tensor: Tensor) -> Tensor:
    """Candidate ``op``'s part of layer ``layer``'s shared weight ``name`` (a name inside the
    kind's sub-layer, e.g. ``op.q_proj.weight``), as the ordinary operator
    (``operators.py``) of that size names and shapes it."""
    if op.kind == "MHA":
        w = space.attention_width(op)
        if name.startswith(("op.q_proj.", "op.k_proj.", "op.v_proj.")):
            return tensor[:w]
        if name == "op.out_proj.weight":
            return tensor[:, :w]
    elif op.kind == "FFN":
        if name.startswith("op.fc1."):
            return tensor[: op.size]
        if name == "op.fc2.weight":
            return tensor[:, : op.size]
    elif name == "op.depthwise.weight":
        return tensor[:, :, centre_taps(space.largest("CONV", layer).size, op.size)]
    return tensor


class EntangledAttention(nn.Module):
    def __init__(self, embed_dim: int, max_heads: int, head_dim: int, attention_dropout: float):
        super().__init__()
        self.max_heads, self.head_dim = max_heads, head_dim
        self.attention_dropout = attention_dropout
        width = max_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, width)
        self.k_proj = nn.Linear(embed_dim, width)
        self.v_proj = nn.Linear(embed_dim, width)
        self.out_proj = nn.Linear(width, embed_dim)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor], sizes: Sizes, weights: Optional[Tensor] = None) -> Tensor:
        if weights is None:  # one choice: the first `sizes` heads
            heads, w = sizes, sizes * self.head_dim
            scale = None
        else:  # superposition over head counts, a mask per head expanded to its columns
            heads, w = self.max_heads, self.max_heads * self.head_dim
            scale = size_mask(sizes, weights, self.max_heads).repeat_interleave(self.head_dim)

        def project(linear: nn.Linear) -> Tensor:
            weight, bias = linear.weight[:w], linear.bias[:w]
            if scale is not None:
                weight, bias = weight * scale[:, None], bias * scale
            return F.linear(x, weight, bias)

        T, B, _ = x.shape

        def split(t: Tensor) -> Tensor:  # (T, B, H*D) -> (B, H, T, D)
            return t.view(T, B, heads, self.head_dim).permute(1, 2, 0, 3)

        q, k, v = split(project(self.q_proj)), split(project(self.k_proj)), split(project(self.v_proj))
        attend = None if padding_mask is None else ~padding_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.attention_dropout if self.training else 0.0
        )
        y = y.permute(2, 0, 1, 3).reshape(T, B, w)
        out_weight = self.out_proj.weight[:, :w]
        if scale is not None:
            out_weight = out_weight * scale[None, :]
        return F.linear(y, out_weight, self.out_proj.bias)



class EntangledFeedForward(nn.Module):
    def __init__(self, embed_dim: int, max_inner: int, activation_fn: str, activation_dropout: float):
        super().__init__()
        self.max_inner = max_inner
        self.fc1 = nn.Linear(embed_dim, max_inner)
        self.fc2 = nn.Linear(max_inner, embed_dim)
        self.activation_fn = utils.get_activation_fn(activation_fn)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor], sizes: Sizes, weights: Optional[Tensor] = None) -> Tensor:
        if weights is None:
            d = sizes
            w1, b1, w2 = self.fc1.weight[:d], self.fc1.bias[:d], self.fc2.weight[:, :d]
        else:
            scale = size_mask(sizes, weights, self.max_inner)
            w1, b1, w2 = self.fc1.weight * scale[:, None], self.fc1.bias * scale, self.fc2.weight * scale[None, :]
        h = self.activation_dropout(self.activation_fn(F.linear(x, w1, b1)))
        return F.linear(h, w2, self.fc2.bias)



class EntangledConv(nn.Module):
    """Separable convolution (as ``SeparableConv``) with an elastic kernel width."""

    def __init__(self, embed_dim: int, max_kernel: int):
        super().__init__()
        self.max_kernel = max_kernel
        self.in_proj = nn.Linear(embed_dim, embed_dim)
        self.depthwise = nn.Conv1d(embed_dim, embed_dim, max_kernel, padding=max_kernel // 2, groups=embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def taps(self, kernel: int) -> slice:
        return centre_taps(self.max_kernel, kernel)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor], sizes: Sizes, weights: Optional[Tensor] = None) -> Tensor:
        if weights is None:
            kernel, padding = self.depthwise.weight[:, :, self.taps(sizes)], sizes // 2
        else:  # a tap at distance r from the centre belongs to every kernel wider than 2r
            distance = (torch.arange(self.max_kernel, device=weights.device) - self.max_kernel // 2).abs()
            covers = (distance[None, :] <= torch.tensor([k // 2 for k in sizes], device=weights.device)[:, None])
            scale = (weights[:, None] * covers.to(weights.dtype)).sum(0)
            kernel, padding = self.depthwise.weight * scale, self.max_kernel // 2
        x = self.in_proj(x)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.transpose(0, 1).unsqueeze(-1), 0.0)
        x = F.conv1d(x.permute(1, 2, 0), kernel, self.depthwise.bias, padding=padding, groups=x.size(-1))
        return self.out_proj(F.gelu(x.permute(2, 0, 1)))



class EntangledSublayer(Sublayer):
    """LayerNorm(x + dropout(op(x))) around an entangled operator; the
    LayerNorm is shared by the kind's choices as well."""

    def forward(self, x: Tensor, padding_mask: Optional[Tensor], sizes: Sizes, weights: Optional[Tensor] = None) -> Tensor:
        return self.layer_norm(x + self.dropout(self.op(x, padding_mask, sizes, weights)))


def build_entangled(kind: str, space: SearchSpace, cfg, layer: int) -> EntangledSublayer:
    largest, d = space.largest(kind, layer), space.hidden_dim
    if kind == "MHA":
        body = EntangledAttention(d, largest.size, space.head_dim, cfg.attention_dropout)
    elif kind == "FFN":
        body = EntangledFeedForward(d, largest.size, cfg.activation_fn, cfg.activation_dropout)
    else:
        body = EntangledConv(d, largest.size)
    return EntangledSublayer(body, d, cfg.dropout)


class EntangledSupernetLayer(SupernetLayer):
    """A super-net layer over a weight-entangled space: one shared sub-layer per
    operator kind (``kinds``), sized for the layer's largest candidate of the kind.

    A child runs its candidate's slice. A mixture superposes each kind's
    candidates in one forward of that kind's operator and mixes the kinds:
    ``sum_K W_K * sublayer_K(x; superposition with weights w_c / W_K)``, where
    ``W_K`` is the kind's total weight. A one-hot mixture is exactly its child.
    """

    def __init__(self, space: SearchSpace, cfg, layer: int):
        nn.Module.__init__(self)
        self.space, self.index = space, layer
        self.kinds = nn.ModuleDict({kind: build_entangled(kind, space, cfg, layer) for kind in space.kinds(layer)})
        self.active = None
        self.mixture = None

    def run_choice(self, c: int, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        op = self.space.candidates[c]
        return self.kinds[op.kind](x, padding_mask, op.size)

    def run_mixture(self, weights: Tensor, run: Sequence[int], x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        out = 0
        for kind, members in self._by_kind(run).items():
            total = sum(weights[c] for c in members)
            # a kind listed with zero total weight contributes nothing (and no NaN)
            share = torch.stack([weights[c] for c in members]) / total.clamp_min(torch.finfo(weights.dtype).tiny)
            sizes = [self.space.candidates[c].size for c in members]
            out = out + total * self.kinds[kind](x, padding_mask, sizes, share)
        return out

    def _by_kind(self, candidates: Sequence[int]) -> Dict[str, List[int]]:
        groups: Dict[str, List[int]] = {}
        for c in candidates:
            groups.setdefault(self.space.candidates[c].kind, []).append(c)
        return groups

    def candidate_parameters(self, c: int) -> List[nn.Parameter]:
        return list(self.kinds[self.space.candidates[c].kind].parameters())

    def unused_parameters(self, used: Sequence[int]) -> List[nn.Parameter]:
        """Whole kinds that none of ``used`` belongs to. The rows of a used kind
        outside the chosen slice get zero gradients, but stay with the optimizer
        (as in AutoFormer and OFA): one parameter cannot be half hidden."""
        kinds = set(self._by_kind(used))
        return [p for kind, module in self.kinds.items() if kind not in kinds for p in module.parameters()]

