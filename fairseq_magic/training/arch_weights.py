"""Gradient-based search: architecture weights theta and their optimisers.

Each layer l has a distribution theta_l over its candidates, on the
probability simplex; a relaxed super-net layer outputs the mixture
``sum_c theta_{l,c} * candidate_c(x)`` (DARTS), or one candidate drawn from a
Gumbel-softmax with a straight-through gradient (GDAS). The optimisers:

* ``darts-adam`` / ``darts-sgd``: theta = softmax(logits), gradient steps on
  the logits (DARTS: Adam with betas (0.5, 0.999) and weight decay 1e-3; SGD
  with momentum 0.9 and weight decay 3e-4);
* ``gaea``: theta kept on the simplex and updated by exponentiated gradient,
  ``theta <- theta * exp(-lr * grad)``, renormalised per layer (GAEA, Li et al.).

``ArchitectureWeights`` owns theta (float32, on the CPU: a few hundred numbers)
and its optimiser outside fairseq's: fairseq neither updates nor casts them
(``--fp16``), and the model carries their state in its state dict, so a
checkpoint resumes them exactly.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import MagicError
from ..streams import STREAM_ARCH_BATCHES, rank_and_world, rng_for

ARCH_OPTIMIZERS = ("darts-adam", "darts-sgd", "gaea")
RELAXATIONS = ("none", "mixture", "gdas")
DEFAULT_LR = {"darts-adam": 3e-4, "darts-sgd": 3e-2, "gaea": 0.1}


class ExponentiatedGradient(torch.optim.Optimizer):
    """Mirror descent on a product of simplices (the rows of each parameter):
    ``p <- p * exp(-lr * grad)``, then each row is renormalised to sum 1.

    Computed in log space, ``p <- softmax(log p - lr * grad)``: the same update,
    but a large step cannot underflow a whole row to 0 (and 0/0). Entries that
    are exactly 0 stay 0."""

    def __init__(self, params, lr: float):
        if lr <= 0:
            raise MagicError(f"exponentiated gradient needs a positive learning rate, got {lr}")
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] = state.get("step", torch.zeros(())) + 1
                p.copy_(torch.softmax(torch.log(p) - group["lr"] * p.grad, dim=-1))


class ArchitectureWeights:
    """theta for every (layer, candidate), its parametrisation and optimiser."""

    def __init__(self, num_layers: int, num_candidates: int, optimizer: str, lr: float = 0.0,
                 options: Optional[Sequence[Sequence[int]]] = None):
        """``options``: each layer's candidates (default: all); theta is 0 elsewhere."""
        if optimizer not in ARCH_OPTIMIZERS:
            raise MagicError(f"unknown architecture optimizer '{optimizer}' (choose from {', '.join(ARCH_OPTIMIZERS)})")
        if lr < 0:
            raise MagicError(f"--arch-lr must be positive, got {lr}")
        self.method = optimizer
        self.lr = lr or DEFAULT_LR[optimizer]
        shape = (num_layers, num_candidates)
        self.mask = torch.ones(shape, dtype=torch.bool)
        if options is not None:
            self.mask.zero_()
            for layer, row in enumerate(options):
                self.mask[layer, list(row)] = True
        if optimizer == "gaea":  # theta itself, uniform on every simplex (stays 0 off the layer's candidates)
            uniform = self.mask.float() / self.mask.sum(-1, keepdim=True)
            self.param = uniform.clone().requires_grad_()
            self.optimizer = ExponentiatedGradient([self.param], lr=self.lr)
        else:  # DARTS logits; softmax(0) is uniform (masked off the layer's candidates)
            self.param = torch.zeros(shape, requires_grad=True)
            if optimizer == "darts-adam":
                self.optimizer = torch.optim.Adam([self.param], lr=self.lr, betas=(0.5, 0.999), weight_decay=1e-3)
            else:
                self.optimizer = torch.optim.SGD([self.param], lr=self.lr, momentum=0.9, weight_decay=3e-4)

    # ------------------------------------------------------------ theta
    def theta(self) -> torch.Tensor:
        """theta, connected to the graph when gradients are on."""
        return theta_of(self.method, self.param, self.mask)

    def log_theta(self) -> torch.Tensor:
        if self.method == "gaea":  # clamped: log's gradient at an exact 0 would be 0/0
            return torch.log(self.param.clamp_min(1e-30)).masked_fill(~self.mask, float("-inf"))
        return torch.log_softmax(self._logits(), dim=-1)

    def _logits(self) -> torch.Tensor:
        return self.param.masked_fill(~self.mask, float("-inf"))

    def gdas(self, gumbel: torch.Tensor, tau: float) -> Tuple[torch.Tensor, List[int]]:
        """GDAS: one candidate per layer, argmax of (log theta + Gumbel noise) / tau,
        as a one-hot whose gradient is that of the softmax (straight-through)."""
        soft = torch.softmax((self.log_theta() + gumbel) / tau, dim=-1)
        chosen = soft.detach().argmax(dim=-1)
        hard = torch.nn.functional.one_hot(chosen, soft.size(-1)).to(soft.dtype)
        return hard - soft.detach() + soft, chosen.tolist()

    @torch.no_grad()
    def entropy(self) -> float:
        """Mean over layers of the entropy of theta_l, in nats (log C for uniform)."""
        return entropy_of(self.theta())

    @torch.no_grad()
    def argmax(self) -> Tuple[int, ...]:
        return tuple(int(c) for c in self.theta().argmax(dim=-1))

    # ------------------------------------------------------------ updates
    def step(self, grad: torch.Tensor) -> None:
        """One optimiser step with ``grad`` (d loss / d param, mean per token)."""
        self.param.grad = grad.to(self.param)
        self.optimizer.step()
        self.param.grad = None

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Flat tensors (they ride in the model's state dict): theta's parameter,
        the optimiser's per-parameter state, and which optimiser made them."""
        out = {"param": self.param.detach().clone(), "mask": self.mask.clone(),
               "method": torch.tensor(ARCH_OPTIMIZERS.index(self.method))}
        for key, value in self.optimizer.state.get(self.param, {}).items():
            out[f"optim.{key}"] = value.detach().clone() if torch.is_tensor(value) else torch.tensor(value)
        return out

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        saved = ARCH_OPTIMIZERS[int(state["method"])]
        if saved != self.method:
            raise MagicError(
                f"the checkpoint's architecture weights were trained with --arch-optimizer {saved}, "
                f"not {self.method}"
            )
        if tuple(state["param"].shape) != tuple(self.param.shape):
            raise MagicError(f"the checkpoint's architecture weights have shape {tuple(state['param'].shape)}, "
                             f"this space needs {tuple(self.param.shape)}")
        with torch.no_grad():
            self.param.copy_(state["param"])
        optim = {key[len("optim."):]: value.clone() for key, value in state.items() if key.startswith("optim.")}
        self.optimizer.state.clear()
        if optim:
            self.optimizer.state[self.param] = optim


def theta_of(method: str, param: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """theta from its parameter: itself for GAEA, the softmax of the logits over
    each layer's candidates (``mask``) for DARTS."""
    if method == "gaea":
        return param
    return torch.softmax(param.masked_fill(~mask, float("-inf")), dim=-1)


def theta_from_state(state: Dict[str, torch.Tensor]) -> torch.Tensor:
    """theta from saved architecture weights, without building anything."""
    param = state["param"].float()
    return theta_of(ARCH_OPTIMIZERS[int(state["method"])], param, state["mask"])


def entropy_of(theta: torch.Tensor) -> float:
    """Mean over layers (rows) of the entropy of theta, in nats."""
    return max(0.0, float(-(theta * torch.log(theta.clamp_min(1e-30))).sum(-1).mean()))  # rounding: never -0


def gumbel_noise(rng: np.random.Generator, shape) -> torch.Tensor:
    """Gumbel(0, 1) noise from a seeded generator (the same on every rank)."""
    u = rng.random(shape)
    return torch.tensor(-np.log(-np.log(np.clip(u, 1e-20, 1.0 - 1e-12))), dtype=torch.float32)


def loss_scale(optimizer) -> float:
    """The factor fairseq's fp16/AMP optimizers multiplied the loss by before backward."""
    from fairseq.optim.amp_optimizer import AMPOptimizer
    scaler = getattr(optimizer, "scaler", None)
    if scaler is not None and hasattr(scaler, "loss_scale"):
        return float(scaler.loss_scale)
    if isinstance(optimizer, AMPOptimizer):
        return float(optimizer._grad_scaler.get_scale())
    return 1.0


class HeldOutBatches:
    """The architecture's batches for bilevel search, from a split the weights
    do not train on. The batch of update t on rank r is a pure function of
    (seed, t, r): passes over the split in a seeded order, each rank taking
    its own share, so a resumed run draws exactly what the first would have."""

    def __init__(self, task, subset: str, batch_size: int, seed: int):
        if subset not in task.datasets:
            try:
                task.load_dataset(subset, combine=False, epoch=1)
            except (FileNotFoundError, MagicError) as err:
                raise MagicError(f"--arch-subset {subset}: {err}") from None
        self.dataset = task.dataset(subset)
        if len(self.dataset) == 0:
            raise MagicError(f"--arch-subset {subset} is empty")
        self.batch_size = min(batch_size, len(self.dataset))
        self.seed = seed
        self._order: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def __call__(self, update_num: int) -> dict:
        rank, world = rank_and_world()
        per_pass = len(self.dataset) // self.batch_size
        passes, position = divmod(update_num * world + rank, per_pass)
        if self._order[0] != passes:
            self._order = (passes, rng_for(self.seed, STREAM_ARCH_BATCHES, passes).permutation(len(self.dataset)))
        indices = self._order[1][position * self.batch_size:(position + 1) * self.batch_size]
        self.dataset.set_epoch(1)  # masked as fairseq's validation masks this split
        return self.dataset.collater([self.dataset[int(i)] for i in indices])
