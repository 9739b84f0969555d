"""Keep unsampled operators bit-identical through an optimizer step.

A zero or missing gradient is not enough: Adam's momentum and weight decay
still move a weight whose gradient is zero, and fairseq's legacy DDP fills
missing gradients with zeros.  So for the duration of ``optimizer.step()`` the
unsampled operators' parameters are removed from the innermost torch
optimizer's parameter groups: it neither updates them nor touches their state.

fairseq wraps the torch optimizer in several ways; each is unwrapped here to
find the parameter objects that optimizer really holds.
"""

from contextlib import contextmanager
from typing import Iterable, List, Tuple

import torch
from fairseq.optim import FairseqOptimizer
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.optim.fp16_optimizer import _FP16OptimizerMixin, _MemoryEfficientFP16OptimizerMixin

from ..errors import MagicError


def _innermost(optimizer, params: List[torch.Tensor]) -> Tuple[torch.optim.Optimizer, List[torch.Tensor]]:
    """The torch optimizer inside fairseq's wrappers, and ``params`` as it knows them."""
    if isinstance(optimizer, _FP16OptimizerMixin):
        if optimizer.has_flat_params:
            raise MagicError(
                "--fp16 with flattened fp32 gradients would move unsampled operators; "
                "add --fp16-no-flatten-grads (or use --memory-efficient-fp16 or --bf16)"
            )
        fp32_of = {id(p): p32 for p, p32 in zip(optimizer.fp16_params, optimizer.fp32_params)}
        return _innermost(optimizer.fp32_optimizer, [fp32_of[id(p)] for p in params if id(p) in fp32_of])
    if isinstance(optimizer, _MemoryEfficientFP16OptimizerMixin):
        return _innermost(optimizer.wrapped_optimizer, params)
    if isinstance(optimizer, AMPOptimizer):
        return _innermost(optimizer.fp32_optimizer, params)
    if isinstance(optimizer, FairseqOptimizer):
        return _innermost(optimizer.optimizer, params)
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer, params
    raise MagicError(f"cannot keep unsampled operators frozen with optimizer {type(optimizer).__name__}")


@contextmanager
def hidden_from_optimizer(optimizer, params: Iterable[torch.Tensor]):
    """Within the block, ``optimizer.step()`` neither updates nor tracks ``params``."""
    inner, hidden = _innermost(optimizer, list(params))
    hidden_ids = {id(p) for p in hidden}
    saved = [group["params"] for group in inner.param_groups]
    for group in inner.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in hidden_ids]
    try:
        yield
    finally:
        for group, full in zip(inner.param_groups, saved):
            group["params"] = full
