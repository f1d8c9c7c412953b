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
The official step factor is written s_t = r_t · sqrt(1−β₂ᵗ)/(1−β₁ᵗ) (``step_size``), applied as lr·s_t.
"""

from __future__ import annotations

import math

import torch


class RAdam(torch.optim.Optimizer):
    """RAdam with decoupled weight decay and no step while ρ_t < 5 (the official OrdinalCLIP form).

    The update is the official one, op for op, applied with ``torch._foreach_*`` to all of a
    group's parameters at once (one step-size scalar per group and step count): the moments in
    float32, then, once rectified, p ← p − lr·wd·p as ``p.add_(p, alpha=−lr·wd)`` (radam.py:107)
    and p ← p − lr·s_t · m_t / (sqrt(v_t) + ε) as ``addcdiv_`` (radam.py:109-110). A parameter not
    in float32 takes the update in its own dtype from the float32 moments.
    """

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

    @staticmethod
    def step_size(step: int, beta1: float, beta2: float) -> float | None:
        """s_t = r_t · sqrt(1−β₂ᵗ) / (1−β₁ᵗ) of step t, written as radam.py:92-99 computes it (the
        same double-precision rounding), or None while ρ_t < 5."""
        beta2_t = beta2 ** step
        n_sma_max = 2 / (1 - beta2) - 1
        n_sma = n_sma_max - 2 * step * beta2_t / (1 - beta2_t)
        if n_sma < 5:
            return None
        return math.sqrt((1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max
                         / (n_sma_max - 2)) / (1 - beta1 ** step)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            buckets: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                buckets.setdefault((state["step"], p.device, p.dtype), []).append(p)
            for (done, _, dtype), params in buckets.items():
                states = [self.state[p] for p in params]
                grads = [p.grad if p.grad.dtype == torch.float32 else p.grad.float() for p in params]
                m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
                # m_t = β₁ m + (1−β₁) g,  v_t = β₂ v + (1−β₂) g²
                torch._foreach_mul_(v, beta2)
                torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
                torch._foreach_mul_(m, beta1)
                torch._foreach_add_(m, grads, alpha=1 - beta1)
                t = done + 1
                for s in states:
                    s["step"] = t
                size = self.step_size(t, beta1, beta2)
                if size is None:
                    continue
                denom = torch._foreach_sqrt(v)
                torch._foreach_add_(denom, eps)
                if dtype != torch.float32:
                    m, denom = [x.to(dtype) for x in m], [x.to(dtype) for x in denom]
                if wd != 0:
                    torch._foreach_add_(params, params, alpha=-lr * wd)
                torch._foreach_addcdiv_(params, m, denom, value=-size * lr)
        return loss
