"""The what-if model's second stage: bootstrap heads refitted on the frozen representation.

With the representation fixed, each head is a ridge-penalised logistic model of the hazard per
(outcome, bin): a base term linear in the representation plus, for each plan, an offset and its
interaction with the representation. Stochastic training moves the plan offsets only slowly (few
treated rows per batch); this convex refit (L-BFGS) does not stop short, and each head's own
bootstrap weights make the spread across heads the sampling spread of the effect.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..models.parts import mask_and_target

__all__ = ["fit_bootstrap_heads", "plan_logits", "stabilised_ipw"]

HEAD_NAMES = ("base_weight", "base_bias", "effect_bias", "effect_weight")


def fit_bootstrap_heads(
    rep: np.ndarray,
    y: np.ndarray,
    plan: np.ndarray,
    weights: torch.Tensor,
    start: dict,
    *,
    n_plans: int,
    effect_l2: float,
    base_l2: float,
    max_iter: int,
) -> dict:
    """Refit every head to convergence and return its tensors (``HEAD_NAMES``, float32).

    ``rep`` (rows, d) is the frozen representation, ``y`` the hazard targets, ``plan`` each row's factual
    plan index, ``weights`` (rows, heads) each head's row weights (bootstrap, times IPW if balancing) and
    ``start`` the network's trained head tensors (``base_weight`` (heads, d, c) and ``base_bias``
    (heads, c) already repeated per head; ``effect_bias``, ``effect_weight``) the refit starts from.
    """
    r = torch.from_numpy(rep).double()
    n = r.shape[0]
    mask, target = (a.reshape(n, -1).double() for a in mask_and_target(torch.from_numpy(y)))
    w = weights
    with torch.no_grad():
        bw, bb, eb, ew = (start[k].detach().double().clone().requires_grad_() for k in HEAD_NAMES)
    rows = [torch.from_numpy(np.flatnonzero(plan == i)) for i in range(1, n_plans)]
    n_obs = float((mask.sum(1, keepdim=True) * w).sum())
    opt = torch.optim.LBFGS(
        [bw, bb, eb, ew],
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure():
        opt.zero_grad()
        logits = torch.einsum("nd,kdc->nkc", r, bw) + bb
        for i, idx in enumerate(rows):
            if idx.numel():
                extra = torch.einsum("nd,kdc->nkc", r[idx], ew[:, i]) + eb[:, i]
                logits = logits.index_add(0, idx, extra)
        bce = F.binary_cross_entropy_with_logits(logits, target.unsqueeze(1).expand_as(logits), reduction="none")
        loss = (bce * mask.unsqueeze(1) * w.unsqueeze(2)).sum()
        loss = loss + effect_l2 * ew.pow(2).sum() + base_l2 * (bw.pow(2).sum() + eb.pow(2).sum())
        loss = loss / n_obs
        loss.backward()
        return loss

    opt.step(closure)
    return {name: v.detach().float() for name, v in zip(HEAD_NAMES, (bw, bb, eb, ew))}


def plan_logits(rep: np.ndarray, heads: dict, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Hazard logits under every plan for every head: (rows, heads, plans, outcomes, bins);
    ``shape`` is (heads, plans, outcomes, bins)."""
    r = torch.from_numpy(rep)
    with torch.inference_mode():
        base = torch.einsum("nd,kdc->nkc", r, heads["base_weight"]) + heads["base_bias"]
        offset = torch.einsum("nd,kpdc->nkpc", r, heads["effect_weight"]) + heads["effect_bias"]
        logits = torch.cat([base.unsqueeze(2), base.unsqueeze(2) + offset], dim=2)
    return logits.view(r.shape[0], *shape).numpy()


def stabilised_ipw(plan: np.ndarray, prop: np.ndarray, share: np.ndarray, max_weight: float) -> np.ndarray:
    """Stabilised inverse propensity weights P(plan) / e(plan | x), clipped to [1/max_weight, max_weight]."""
    e = np.maximum(prop[np.arange(plan.size), plan], 1e-6)
    return np.clip(share[plan] / e, 1.0 / max_weight, max_weight).astype(np.float32)
