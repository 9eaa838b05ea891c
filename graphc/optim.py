"""Optimizers as graph builders: each one appends the update of one parameter to a step graph.

An optimizer never runs anything itself. `train_step` (graphc/train.py) differentiates the loss,
then calls `update(b, p, g, step, state)` once per parameter, which emits nodes computing the new
parameter value and the new optimizer state from the old ones. State lives in parameters of the
step graph named `state.<param>.<slot>` (zeros initially), so a runtime only has to feed outputs
back as parameters.

The updates follow torch.optim operation for operation (same order of floating-point ops where it
matters), so tests can compare against torch over several steps:

- `SGD(lr, momentum, dampening, nesterov, weight_decay, decoupled)`: torch.optim.SGD. Coupled
  weight decay (the default, `decoupled=False`) is the seed's penalty `λ Σ W²` added to the loss
  with `λ = weight_decay / 2`, whose gradient is torch's `weight_decay * W`; `decoupled=True`
  shrinks the weights directly, `W ← W (1 - lr·weight_decay)`, as AdamW does.
- `Adam(lr, betas, eps, weight_decay)`: torch.optim.Adam (coupled L2 decay through the loss).
- `AdamW(lr, betas, eps, weight_decay)`: torch.optim.AdamW (decoupled decay).

`step` is the i64 scalar graph input holding the number of the update being made, 1 for the
first (Adam's bias correction uses it as t).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from graphc.ir.builder import Builder, Tensor
from graphc.ir.errors import GraphError


class OptimizerError(GraphError):
    """Invalid optimizer hyperparameters."""


@dataclass(frozen=True)
class Optimizer:
    """Base class. Subclasses name their state slots and build one parameter's update."""

    lr: float = 1e-3

    def state_slots(self) -> tuple[str, ...]:
        """Names of the per-parameter state tensors (each shaped like the parameter)."""
        return ()

    def l2_penalty(self) -> float:
        """λ of the coupled penalty λ Σ W² that `train_step` adds to the loss (0: none)."""
        return 0.0

    def update(self, b: Builder, p: Tensor, g: Tensor, step: Tensor,
               state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Emit the new value of parameter `p` (gradient `g`) and its new state."""
        raise NotImplementedError

    def _check(self) -> None:
        if not self.lr >= 0.0:
            raise OptimizerError(f"{type(self).__name__}: learning rate {self.lr} must be >= 0")


@dataclass(frozen=True)
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay."""

    lr: float = 0.01
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    decoupled: bool = False

    def __post_init__(self) -> None:
        self._check()
        if self.momentum < 0.0 or self.weight_decay < 0.0:
            raise OptimizerError(f"SGD: momentum={self.momentum} and weight_decay="
                                 f"{self.weight_decay} must be >= 0")
        if self.nesterov and (self.momentum <= 0.0 or self.dampening != 0.0):
            raise OptimizerError("SGD: nesterov momentum needs momentum > 0 and dampening 0")

    def state_slots(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum else ()

    def l2_penalty(self) -> float:
        return 0.0 if self.decoupled else self.weight_decay / 2.0

    def update(self, b, p, g, step, state):
        base = decoupled_decay(p, self.lr, self.weight_decay if self.decoupled else 0.0)
        if not self.momentum:
            return base - self.lr * g, {}
        buf = state["momentum"] * self.momentum + (
            g if self.dampening == 0.0 else g * (1.0 - self.dampening))
        if self.dampening != 0.0:
            # torch starts the buffer at the first gradient itself, undamped
            buf = b.select(step.eq(1), g, buf)
        d = g + buf * self.momentum if self.nesterov else buf
        return base - self.lr * d, {"momentum": buf}


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight decay as an L2 penalty in the loss."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        self._check()
        b1, b2 = self.betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise OptimizerError(f"{type(self).__name__}: betas {self.betas} must be in [0, 1)")
        if self.eps < 0.0 or self.weight_decay < 0.0:
            raise OptimizerError(f"{type(self).__name__}: eps={self.eps} and weight_decay="
                                 f"{self.weight_decay} must be >= 0")

    def state_slots(self) -> tuple[str, ...]:
        return ("m", "v")

    def l2_penalty(self) -> float:
        return self.weight_decay / 2.0

    def decay(self) -> float:
        """Decoupled decay rate (AdamW overrides)."""
        return 0.0

    def update(self, b, p, g, step, state):
        b1, b2 = self.betas
        base = decoupled_decay(p, self.lr, self.decay())
        m = state["m"] + (g - state["m"]) * (1.0 - b1)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v = state["v"] * b2 + g * g * (1.0 - b2)
        t = b.cast(step, dtype=p.dtype)
        bias1 = 1.0 - b.const(b1, dtype=p.dtype) ** t
        bias2 = 1.0 - b.const(b2, dtype=p.dtype) ** t
        step_size = self.lr / bias1
        denom = b.sqrt(v) / b.sqrt(bias2) + self.eps
        return base - step_size * (m / denom), {"m": m, "v": v}


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW."""

    weight_decay: float = 1e-2

    def l2_penalty(self) -> float:
        return 0.0

    def decay(self) -> float:
        return self.weight_decay


def decoupled_decay(p: Tensor, lr: float, weight_decay: float) -> Tensor:
    """W (1 - lr·weight_decay), or W itself when there is no decoupled decay."""
    return p * (1.0 - lr * weight_decay) if weight_decay else p
