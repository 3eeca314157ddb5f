"""The what-if model's first stage: its training targets, the rows each ensemble member learns on, and
the hazard logits under each row's factual plan."""

from __future__ import annotations

from dataclasses import replace

import torch

__all__ = ["STAGE1_EFFECT_L2", "Targets", "subset_rows", "member_line", "factual_logits"]

# a light hold on the plan offsets' heterogeneity while the representation forms; the heads are refitted after
STAGE1_EFFECT_L2 = 1e-2


def subset_rows(data, rows):
    """The rows ``rows`` of a SequenceData (the event arrays are shared, not copied)."""
    return replace(
        data,
        lo=data.lo[rows],
        hi=data.hi[rows],
        prediction_time=data.prediction_time[rows],
        static=data.static[rows],
        end=None if data.end is None else data.end[rows],
    )


class Targets:
    """Row-indexable training targets: hazard labels, plan index, bootstrap weights per head."""

    def __init__(self, y, plan, boot):
        self.y, self.plan, self.boot = y, plan, boot

    def __getitem__(self, rows):
        return Targets(self.y[rows], self.plan[rows], self.boot[rows])

    def __len__(self):
        return self.plan.size


def member_line(m, n_folds, n_encoders, learn, held) -> str:
    """The progress line of ensemble member ``m`` (encoder m // n_folds, fold m % n_folds)."""
    f = m % n_folds
    fold = f", fold {f + 1}/{n_folds}: encoder on {learn.size:,} rows, heads on {held.size:,}" if n_folds > 1 else ""
    return f"encoder {m // n_folds + 1}/{n_encoders}" + fold


def factual_logits(base, offset, plan):
    """Hazard logits under each row's factual plan, per head: (batch, heads, outcomes, bins)."""
    n, k = offset.shape[:2]
    zero = torch.zeros_like(offset[:, :, :1])
    all_plans = torch.cat([zero, offset], dim=2)  # (n, k, plans, o, b)
    idx = plan.view(n, 1, 1, 1, 1).expand(n, k, 1, *offset.shape[-2:])
    return base.unsqueeze(1) + all_plans.gather(2, idx).squeeze(2)
