"""The candidate operators, each wrapped as a BERT post-LN sub-layer.

Every sub-layer computes ``LayerNorm(x + dropout(op(x)))`` on tensors laid out
as fairseq's encoder passes them: ``(T, B, C)``, with a ``(B, T)`` padding mask
that is True at padding (or None when the batch has no padding).

Parameter counts are what ``SearchSpace.operator_params`` says; a test checks
the two agree.
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.modules import LayerNorm

from ..errors import MagicError
from ..space import Operator, SearchSpace

Tensor = torch.Tensor


class SelfAttention(nn.Module):
    """MHA<h>: h heads over a Q/K/V width that may differ from the hidden size."""

    def __init__(self, embed_dim: int, num_heads: int, qkv_dim: int, attention_dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = qkv_dim // num_heads
        self.attention_dropout = attention_dropout
        self.q_proj = nn.Linear(embed_dim, qkv_dim)
        self.k_proj = nn.Linear(embed_dim, qkv_dim)
        self.v_proj = nn.Linear(embed_dim, qkv_dim)
        self.out_proj = nn.Linear(qkv_dim, embed_dim)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        T, B, _ = x.shape

        def heads(t: Tensor) -> Tensor:  # (T, B, H*D) -> (B, H, T, D)
            return t.view(T, B, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        attend = None if padding_mask is None else ~padding_mask[:, None, None, :]  # (B, 1, 1, T)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        y = y.permute(2, 0, 1, 3).reshape(T, B, self.num_heads * self.head_dim)  # (T, B, H*D)
        return self.out_proj(y)


class FeedForward(nn.Module):
    """FFN<d>: Linear(C, d) -> activation -> dropout -> Linear(d, C), as in BERT."""

    def __init__(self, embed_dim: int, inner_dim: int, activation_fn: str, activation_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, inner_dim)
        self.fc2 = nn.Linear(inner_dim, embed_dim)
        self.activation_fn = utils.get_activation_fn(activation_fn)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        return self.fc2(self.activation_dropout(self.activation_fn(self.fc1(x))))


class SeparableConv(nn.Module):
    """CONV<k>: pointwise projection, depthwise convolution of width k along the
    sequence, GELU, pointwise projection (a separable convolution, App. A.1).

    Padding positions are zeroed before the depthwise convolution, so a real
    token's window never reads padding; sequence ends are zero-padded.
    """

    def __init__(self, embed_dim: int, kernel_size: int):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, embed_dim)
        self.depthwise = nn.Conv1d(
            embed_dim, embed_dim, kernel_size, padding=kernel_size // 2, groups=embed_dim
        )
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        x = self.in_proj(x)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.transpose(0, 1).unsqueeze(-1), 0.0)
        x = self.depthwise(x.permute(1, 2, 0)).permute(2, 0, 1)  # (T,B,C) -> (B,C,T) -> (T,B,C)
        return self.out_proj(F.gelu(x))


class Sublayer(nn.Module):
    """BERT post-LN sub-layer around one operator: LayerNorm(x + dropout(op(x)))."""

    def __init__(self, op: nn.Module, embed_dim: int, dropout: float):
        super().__init__()
        self.op = op
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = LayerNorm(embed_dim)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        return self.layer_norm(x + self.dropout(self.op(x, padding_mask)))


def build_sublayer(op: Operator, space: SearchSpace, cfg, cls=None) -> "Sublayer":
    """Build one candidate as a sub-layer (of class ``cls``, default Sublayer);
    ``cfg`` carries dropouts and activation."""
    d = space.hidden_dim
    if op.kind == "MHA":
        body = SelfAttention(d, op.size, space.attention_width(op), cfg.attention_dropout)
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
    """One super-net layer: every candidate, of which only the active one runs.

    The other candidates take no part in the forward pass, so they cost no
    compute, hold no activations and receive no gradient.

    For gradient-based search a layer can instead run a *mixture*
    (``set_mixture``): the sum of ``weights[c] * candidate_c(x)`` over the
    candidates ``c`` listed to run (DARTS; GDAS lists only the sampled one).
    A chosen child (``active``) takes precedence over a mixture.
    """

    def __init__(self, space: SearchSpace, cfg, layer: int):
        super().__init__()
        self.space, self.index = space, layer
        # keyed by candidate index: a layer holds only its own candidates (see SearchSpace.layer_options)
        self.candidates = nn.ModuleDict(
            {str(c): build_sublayer(space.candidates[c], space, cfg) for c in space.layer_options[layer]}
        )
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

    def candidate(self, c: int) -> nn.Module:
        return self.candidates[str(c)]

    def run_choice(self, c: int, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        return self.candidate(c)(x, padding_mask)

    def run_mixture(self, weights: Tensor, run: Sequence[int], x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        return sum(weights[c] * self.candidate(c)(x, padding_mask) for c in run)

    def candidate_parameters(self, c: int) -> List[nn.Parameter]:
        """The parameters candidate ``c`` computes with."""
        return list(self.candidate(c).parameters())

    def unused_parameters(self, used: Sequence[int]) -> List[nn.Parameter]:
        """Parameters that none of the candidates ``used`` computes with."""
        used = {str(c) for c in used}
        return [p for key, candidate in self.candidates.items() if key not in used for p in candidate.parameters()]
