"""RAdam in the form OrdinalCLIP's (and so NumCLIP's) runs use it.

The official optimizer (xk-huang/OrdinalCLIP @ ca10a20, ordinalclip/runner/optim/custom_optim/radam.py,
class RAdam, lines 43-117, built with ``degenerated_to_sgd`` left False by runner/optim/optimizer.py:98-104)
differs from ``torch.optim.RAdam`` in two ways:

1. weight decay is decoupled, p ← p − lr·wd·p (radam.py:107, :113), not an L2 term in the gradient
   (torch's default ``decoupled_weight_decay=False``);
2. while the variance is not yet tractable (ρ_t < 5: the first 5 steps with β₂ = 0.999) the official
   step changes nothing, neither update nor decay (step_size = −1, radam.py:100-101 and :105-115); torch
   takes an un-rectified step lr·m̂_t there and, with ``decoupled_weight_decay=True``, decays too.

In the rectified steps both compute the same update (Liu et al. 2020, Alg. 2):
    m_t = β₁ m + (1−β₁) g,   v_t = β₂ v + (1−β₂) g²,
    ρ_∞ = 2/(1−β₂) − 1,      ρ_t = ρ_∞ − 2t β₂ᵗ / (1−β₂ᵗ),
    r_t = sqrt((ρ_t−4)(ρ_t−2)ρ_∞ / ((ρ_∞−4)(ρ_∞−2)ρ_t)),
    p ← p − lr·wd·p − lr · r_t · sqrt(1−β₂ᵗ)/(1−β₁ᵗ) · m_t / (sqrt(v_t) + ε).
The moments use the raw gradient, so whether the decay comes before or after them does not matter.
"""

from __future__ import annotations

import math

import torch


class RAdam(torch.optim.Optimizer):
    """RAdam with decoupled weight decay and no step while ρ_t < 5 (the official OrdinalCLIP form)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"RAdam: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @staticmethod
    def rectification(step: int, beta2: float) -> float | None:
        """r_t of step t (1-based), or None while ρ_t < 5 (then the official step does nothing)."""
        rho_inf = 2 / (1 - beta2) - 1
        beta2_t = beta2 ** step
        rho_t = rho_inf - 2 * step * beta2_t / (1 - beta2_t)
        if rho_t < 5:
            return None
        return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RAdam does not support sparse gradients")
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                state["step"] += 1
                t = state["step"]
                r = self.rectification(t, beta2)
                if r is None:
                    continue
                step_size = lr * r * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                if wd != 0:
                    p.mul_(1 - lr * wd)
                p.addcdiv_(m.to(p.dtype), v.sqrt().add_(eps).to(p.dtype), value=-step_size)
        return loss
