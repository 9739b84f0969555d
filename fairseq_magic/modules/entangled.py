"""Weight-entangled spaces: the candidates of one kind share one weight tensor.

A layer holds one sub-layer per operator kind (MHA, FFN, CONV), built at the
layer's largest candidate of that kind from the same operators as a plain
space (``operators.py``); a smaller candidate runs a slice of those weights,
and a mixture over sizes runs the TangleNAS superposition in one forward.

``slice_state`` cuts a choice's weights out of the shared tensors, with the
names a plain operator of that size uses, so an entangled child exports as a
plain ``magic_child``.
"""

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from ..space import Operator, SearchSpace
from .operators import SupernetLayer, build_sublayer, centre_taps

Tensor = torch.Tensor


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


class EntangledSupernetLayer(SupernetLayer):
    """A super-net layer over a weight-entangled space: one shared sub-layer per
    operator kind (``kinds``), sized for the layer's largest candidate of the kind.

    A child runs its candidate's slice. A mixture superposes each kind's
    candidates in one forward of that kind's operator and mixes the kinds:
    ``sum_K W_K * sublayer_K(x; superposition with weights w_c / W_K)``, where
    ``W_K`` is the kind's total weight. A one-hot mixture is exactly its child.
    """

    def __init__(self, space: SearchSpace, cfg, layer: int):
        super().__init__(space, layer)
        self.kinds = nn.ModuleDict(
            {kind: build_sublayer(space.largest(kind, layer), space, cfg) for kind in space.kinds(layer)}
        )

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

