"""ELECTRA-style pre-training of a found child (E-MAGIC-AT, Table 2, App. C):
replaced token detection.

A small masked-LM generator fills the masked positions with tokens sampled
from its predictions; the ``magic_child`` discriminator reads the corrupted
sentence and predicts, for every token, whether it was replaced. As in ELECTRA
the two share the token (and position) embeddings: the generator reads the
discriminator's embedded input, projects it to its own width, and predicts
over the vocabulary through the same embedding matrix.

    loss = generator MLM loss + disc_weight * discriminator loss     (ELECTRA: 50)

The generator and the discriminator's token head live in the criterion
(``criterions/magic_electra.py``), so fairseq trains and saves them (the
checkpoint's ``criterion`` entry, for resuming) while the checkpoint's
``model`` stays a plain ``magic_child`` that ``sentence_prediction`` and the
hub load unchanged.
"""

import re
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.modules import LayerNorm

from ..errors import MagicError
from ..space import Child, SearchSpace
from . import ChildLayer, build_sublayer

_SIZED = re.compile(r"^(FFN|CONV)(\d+)$")


def generator_space(space: SearchSpace, child: Child, fraction: float, arch: str = "") -> Tuple[SearchSpace, Child]:
    """The generator: the discriminator's operators (or ``arch``) at ``fraction`` of its
    hidden and FFN sizes (FFN<d> becomes FFN<fraction * d>; attention keeps its head count)."""
    if not 0 < fraction <= 1:
        raise MagicError(f"the generator must not be larger than the discriminator: --generator-fraction must be in "
                         f"(0, 1], got {fraction}")
    hidden = max(1, round(space.hidden_dim * fraction))
    names = [op.strip() for op in arch.split(",")] if arch else [space.candidates[c].name for c in child]
    scaled = []
    for name in names:
        sized = _SIZED.match(name)
        if sized and sized.group(1) == "FFN":
            name = f"FFN{max(1, round(int(sized.group(2)) * fraction))}"
        scaled.append(name)
    gen = SearchSpace.build(len(scaled), ",".join(dict.fromkeys(scaled)), hidden_dim=hidden,
                            ffn_dim=max(1, round(space.ffn_dim * fraction)))
    return gen, gen.parse(",".join(scaled))


class Generator(nn.Module):
    """A narrow child on the discriminator's embeddings: in-projection, its layers,
    and an LM head (dense, activation, LayerNorm) onto the shared embedding matrix."""

    def __init__(self, space: SearchSpace, child: Child, input_dim: int, output_dim: int, vocab_size: int, cfg):
        super().__init__()
        self.proj_in = nn.Linear(input_dim, space.hidden_dim)
        self.layers = nn.ModuleList(build_sublayer(space.candidates[c], space, cfg, ChildLayer) for c in child)
        self.dense = nn.Linear(space.hidden_dim, output_dim)
        self.activation_fn = utils.get_activation_fn(cfg.activation_fn)
        self.layer_norm = LayerNorm(output_dim)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.space, self.child = space, child

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor], masked: torch.Tensor,
                embedding_matrix: torch.Tensor) -> torch.Tensor:
        """Logits ``(masked tokens, V)`` at the ``masked`` positions ``(B, T)`` of ``x`` ``(T, B, C)``."""
        x = self.proj_in(x)
        for layer in self.layers:
            x = layer(x, padding_mask)
        x = x.transpose(0, 1)[masked]
        x = self.layer_norm(self.activation_fn(self.dense(x)))
        return F.linear(x, embedding_matrix) + self.bias


class TokenDetectionHead(nn.Module):
    """The discriminator's head: a logit per token, replaced (> 0) or original."""

    def __init__(self, hidden_dim: int, activation_fn: str):
        super().__init__()
        self.dense = nn.Linear(hidden_dim, hidden_dim)
        self.activation_fn = utils.get_activation_fn(activation_fn)
        self.out = nn.Linear(hidden_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.activation_fn(self.dense(features))).squeeze(-1)


def corrupt(original: torch.Tensor, masked: torch.Tensor, generator_logits: torch.Tensor) -> torch.Tensor:
    """``original`` with the ``masked`` positions replaced by tokens sampled from the generator."""
    with torch.no_grad():
        sampled = torch.multinomial(F.softmax(generator_logits.float(), dim=-1), 1).squeeze(-1)
    corrupted = original.clone()
    corrupted[masked] = sampled
    return corrupted


def restore_original(tokens: torch.Tensor, target: torch.Tensor, pad: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(the sentence before masking, the masked positions) from a masked-LM sample."""
    masked = target.ne(pad)
    return torch.where(masked, target, tokens), masked


def describe(space: SearchSpace, child: Sequence[int]) -> str:
    return f"{space.format(child)} (hidden {space.hidden_dim}, FFN {space.ffn_dim})"
