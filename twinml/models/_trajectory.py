"""Trajectory forecasts: each key lab's value at several horizons, with a calibrated 80 % interval.

A small quantile head reads what a trained sequence model already computes for a prediction row
(its representation ``r``, the input of the hazard head, and the encoder state it was made from)
plus each forecast code's reading history in the row's window (the last reading, whether there is
one and its age; the mean, the count and two exponentially weighted means) and the recency and count
of the 16 most frequent codes without values (treatments, diagnoses, visits, markers: :func:`code_recency`),
and gives the 10 %, 50 % and 90 % quantiles of the
code's reading nearest each horizon (:func:`twinml.features.readings_near_horizons`). It is fitted
after the risk model, on the training rows, with the pinball loss and early stopping on the tuning
rows; the encoder is frozen, so the risk model's scores are unchanged. Three such heads (seeds
``random_state + m``) are averaged. The interval is then
conformalised on the tuning rows (conformalised quantile regression, per code and horizon): the
10-90 % band is widened or narrowed by the tuning rows' ``ceil(0.8 (n + 1)) / n`` quantile of the
conformity score ``max(lower - y, y - upper)``. The same tuning rows also early-stopped the risk
model and the head, so the guarantee is approximate: held-out coverage was 77-81 % on the
simulator and 76-83 % on Synthea dev (README).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._arrays import NAT
from .._validation import ConfigError
from ..features import last_readings, last_value_features, readings_near_horizons
from ._trainer import EarlyStopping, fit_epochs

__all__ = ["TrajectoryForecaster", "QUANTILES", "COVERAGE", "trajectory_of", "trajectory_selection"]

QUANTILES = (0.1, 0.5, 0.9)
COVERAGE = 0.8
N_CONTEXT = 16  # codes without values whose recency and count the head reads


class _QuantileHead(nn.Module):
    """(representation, last readings) -> per code and horizon the median (the last normalised
    reading, or the mean, plus a learnt change) and two non-negative spreads below and above it."""

    def __init__(self, n_in, n_codes, n_horizons, hidden):
        super().__init__()
        self.shape = (n_codes, n_horizons)
        self.mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.out = nn.Linear(hidden, n_codes * n_horizons * 3)

    def forward(self, x, base):
        o = self.out(self.mlp(x)).view(-1, *self.shape, 3)
        mid = base + o[..., 1]
        return torch.stack(
            [mid - nn.functional.softplus(o[..., 0]), mid, mid + nn.functional.softplus(o[..., 2])], dim=-1
        )


_YEAR_US = 365.25 * 86_400 * 1_000_000
_DECAYS_YEARS = (1.0, 4.0)


def reading_history(data, codes) -> np.ndarray:
    """Per row and code, a summary of the code's normalised readings in the row's ``[lo, hi)``: the
    mean, log1p(count) / 3, and exponentially weighted means with time constants of 1 and 4 years
    (recent readings count more: the state they read drifts); zeros where there is no reading.

    float32 (n_rows, 4 * len(codes)). Means and counts are prefix-sum differences. The weighted
    means run ``m_k = exp(-(t_k - t_(k-1)) / tau) m_(k-1) + v_k`` once over each subject's readings
    (from the earliest ``lo`` of its rows; subjects are told apart by the rows' ``end``), in steps
    over the readings' rank vectorised over subjects; a row whose window starts later subtracts the
    part before it, ``m_last - exp(-(t_last - t_(first-1)) / tau) m_(first-1)`` (the same for the
    weights), so a row's value does not depend on which other rows are scored with it.
    """
    n = data.lo.size
    out = np.zeros((n, 4 * codes.size), np.float32)
    ends, row_seg = np.unique(data.end, return_inverse=True)  # one segment per subject with rows
    seg_lo = np.full(ends.size, np.iinfo(np.int64).max)
    np.minimum.at(seg_lo, row_seg, data.lo)
    seg_hi = np.zeros(ends.size, np.int64)
    np.maximum.at(seg_hi, row_seg, data.hi)
    tau = np.asarray(_DECAYS_YEARS)
    for k, c in enumerate(codes):  # a loop over codes; every step is vectorised over rows
        at = np.flatnonzero((data.code == c) & (data.has_value > 0))
        if at.size == 0:
            continue
        first, past = np.searchsorted(at, data.lo), np.searchsorted(at, data.hi)  # a row's readings: [first, past)
        count = np.maximum(past - first, 0)
        seen = count > 0
        v = data.value[at].astype(np.float64)
        cs = np.concatenate([[0.0], np.cumsum(v)])
        out[:, 4 * k] = np.where(seen, (cs[np.maximum(past, first)] - cs[first]) / np.maximum(count, 1), 0.0)
        out[:, 4 * k + 1] = np.log1p(count) / 3.0
        # the readings some row of their subject reads (its subject: the first segment ending after it)
        seg = np.searchsorted(ends, at, side="right")
        ok = seg < ends.size
        used = ok & (at >= seg_lo[np.minimum(seg, ends.size - 1)]) & (at < seg_hi[np.minimum(seg, ends.size - 1)])
        if not used.any():
            continue
        pos = np.cumsum(used) - 1  # each reading's place among the used ones
        seg, t = seg[used], data.time[at[used]].astype(np.float64) / _YEAR_US
        new = np.r_[True, seg[1:] != seg[:-1]]
        rank = np.arange(seg.size) - np.maximum.accumulate(np.where(new, np.arange(seg.size), 0))
        decay = np.exp(-np.diff(t, prepend=t[:1])[:, None] / tau)  # (readings, taus); unused at a rank 0
        num = np.repeat(v[used][:, None], tau.size, axis=1)
        den = np.ones_like(num)
        by_rank = np.argsort(rank, kind="stable")
        bounds = np.searchsorted(rank[by_rank], np.arange(1, rank.max(initial=0) + 2))
        for r in range(1, bounds.size):  # a loop over reading ranks, vectorised over subjects
            idx = by_rank[bounds[r - 1] : bounds[r]]
            num[idx] += decay[idx] * num[idx - 1]
            den[idx] += decay[idx] * den[idx - 1]
        last, head = pos[np.maximum(past - 1, 0)], pos[np.minimum(first, at.size - 1)]
        cut = seen & (rank[np.minimum(head, seg.size - 1)] > 0)  # readings of the subject before the window
        prev = np.maximum(head - 1, 0)
        fade = np.where(cut[:, None], np.exp(-(t[last] - t[prev])[:, None] / tau), 0.0)
        w_num = num[last] - fade * num[prev]
        w_den = den[last] - fade * den[prev]
        for j in range(tau.size):
            out[:, 4 * k + 2 + j] = np.where(seen, w_num[:, j] / np.where(seen, w_den[:, j], 1.0), 0.0)
    return out


def code_recency(data, codes) -> np.ndarray:
    """Per row and code, in the row's ``[lo, hi)``: whether the code occurs, log1p(days since its last
    occurrence) / 10 and log1p(its count) / 3 (zeros where it does not occur); float32 (n, 3 * len(codes)).

    One searchsorted per code over all rows, as for :func:`reading_history`."""
    out = np.zeros((data.lo.size, 3 * codes.size), np.float32)
    for k, c in enumerate(codes):
        at = np.flatnonzero(data.code == c)
        if at.size == 0:
            continue
        first, past = np.searchsorted(at, data.lo), np.searchsorted(at, data.hi)
        count = np.maximum(past - first, 0)
        seen = count > 0
        last = data.time[at[np.maximum(past - 1, 0)]]
        days = np.maximum(data.prediction_time - last, 0) / (_YEAR_US / 365.25)
        out[:, 3 * k] = seen
        out[:, 3 * k + 1] = np.where(seen, np.log1p(days) / 10.0, 0.0)
        out[:, 3 * k + 2] = np.log1p(count) / 3.0
    return out


def _pinball(pred, y, observed):
    q = pred.new_tensor(QUANTILES)
    err = y.unsqueeze(-1) - pred
    loss = torch.maximum(q * err, (q - 1.0) * err).sum(-1)
    return (loss * observed).sum() / observed.sum().clamp(min=1.0)


class TrajectoryForecaster:
    """The fitted trajectory head of a sequence risk model (see the module docstring).

    Attributes
    ----------
    codes : list of str
    horizons_days : tuple of int
    code_ids : int array, the codes' ids in the featurizer's vocabulary
    mean, std : float arrays, the codes' value scaling (the featurizer's)
    adjust : float array (n_codes, n_horizons), the conformal widening in normalised units
    n_tuning : int array (n_codes, n_horizons), tuning readings the widening was set on
    members_ : list of the fitted quantile heads (their quantiles are averaged)
    history : per member, a list of dict per epoch: the train and tuning pinball loss
    best_epochs : per member, the epoch kept (early stopping on the tuning pinball loss)
    """

    # Head settings chosen on the 20,000-subject simulator's tuning split against LightGBM's MAE per
    # code and horizon (18 cells; mean gain / worst cell): lr 1e-3 +0.19 % / -1.0 %; lr 3e-4 +0.65 % /
    # -0.21 %; five members at lr 1e-3 +0.76 % / -0.12 %; three members at lr 3e-4 +0.76 % / -0.10 %
    # (adopted); lr 1e-4, batch 512 or 1024, weight decay 0 or 1e-2, hidden 256: no better. Adding the
    # recency and count of the 16 most frequent codes without values (code_recency): +1.04 % / +0.38 %
    # (adopted; every cell ahead of LightGBM on the tuning split, LDL +0.73 / +0.91 / +0.56 %).
    def __init__(
        self,
        codes,
        horizons_days,
        featurizer,
        *,
        hidden=128,
        lr=3e-4,
        weight_decay=1e-4,
        batch_size=256,
        max_epochs=100,
        patience=8,
        n_members=3,
        random_state=0,
    ):
        self.codes = list(codes)
        self.horizons_days = tuple(int(h) for h in horizons_days)
        vocab = pd.Index(featurizer.vocabulary_)
        vc = vocab.get_indexer(self.codes)
        bad = [c for c, i in zip(self.codes, vc) if i < 0 or not featurizer.numeric_[i]]
        if bad:
            raise ConfigError(
                f"trajectory_codes: {bad[0]!r} is not a numeric code of the training events "
                f"(seen at least min_code_count times with values); {len(bad)} such code(s)"
            )
        self.code_ids = (vc + 2).astype(np.int32)  # the featurizer's ids (0 pad, 1 unknown)
        # the most frequent codes without values (treatments, diagnoses, visits): how long ago and how often
        plain = np.flatnonzero(~np.asarray(featurizer.numeric_, bool))
        counts = np.asarray(featurizer.code_count_)[plain]
        self.context_ids = (np.sort(plain[np.argsort(-counts, kind="stable")[:N_CONTEXT]]) + 2).astype(np.int32)
        self.mean = featurizer.value_mean_[vc].astype(np.float64)
        self.std = featurizer.value_std_[vc].astype(np.float64)
        self.hidden, self.lr, self.weight_decay = hidden, lr, weight_decay
        self.batch_size, self.max_epochs, self.patience, self.random_state = (
            batch_size,
            max_epochs,
            patience,
            random_state,
        )
        self.n_members = n_members

    # -- inputs and targets ------------------------------------------------------------------
    def inputs(self, rep: np.ndarray, data) -> tuple[np.ndarray, np.ndarray]:
        """Head inputs for rows of ``data`` (the model's featurised rows) with representations ``rep``:
        ``rep``, each code's last reading (:func:`last_value_features`) and its reading history
        (:func:`reading_history`); and the median's base, the last normalised reading (0: none)."""
        val, vtime = last_readings(data, self.code_ids)
        feats = last_value_features(val, vtime, data.prediction_time)
        base = np.where(vtime != NAT, val, 0.0).astype(np.float32)[:, :, None].repeat(len(self.horizons_days), -1)
        parts = [rep, feats, reading_history(data, self.code_ids)]
        context = getattr(self, "context_ids", None)  # heads pickled before it read no context
        if context is not None and context.size:
            parts.append(code_recency(data, context))
        return np.concatenate(parts, axis=1).astype(np.float32), base

    def targets(self, events, index) -> np.ndarray:
        """Normalised readings nearest each horizon, NaN where none (n_rows, n_codes, n_horizons)."""
        raw, _ = readings_near_horizons(events, index, self.codes, self.horizons_days)
        return (raw - self.mean[None, :, None]) / self.std[None, :, None]

    # -- fit and predict ---------------------------------------------------------------------
    def fit(self, x, base, y, x_tune, base_tune, y_tune, say=lambda msg: None) -> TrajectoryForecaster:
        t = {
            k: torch.from_numpy(np.ascontiguousarray(a, np.float32))
            for k, a in {
                "x": x,
                "base": base,
                "y": np.nan_to_num(y),
                "obs": ~np.isnan(y),
                "xt": x_tune,
                "bt": base_tune,
                "yt": np.nan_to_num(y_tune),
                "ot": ~np.isnan(y_tune),
            }.items()
        }
        self.members_, self.history, self.best_epochs = [], [], []
        with torch.random.fork_rng():  # the risk model's torch stream is left as it was
            for m in range(self.n_members):
                net, history, epoch = self._fit_member(t, self.random_state + m)
                self.members_.append(net)
                self.history.append(history)
                self.best_epochs.append(epoch)
        q = self._quantiles(x_tune, base_tune)
        self.adjust, self.n_tuning = self._conformal(q, y_tune)
        say(
            f"trajectory head: {len(self.codes)} codes x {len(self.horizons_days)} horizons, {self.n_members} members "
            f"(best epochs {self.best_epochs}); 80% intervals conformalised on "
            f"{int(self.n_tuning.min()):,}-{int(self.n_tuning.max()):,} tuning readings per code and horizon"
        )
        return self

    def _fit_member(self, t, seed):
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        net = _QuantileHead(t["x"].shape[1], len(self.codes), len(self.horizons_days), self.hidden)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def train_epoch(epoch):
            total = 0.0
            order = rng.permutation(t["x"].shape[0])
            for i in range(0, order.size, self.batch_size):
                b = torch.from_numpy(order[i : i + self.batch_size])
                opt.zero_grad()
                loss = _pinball(net(t["x"][b], t["base"][b]), t["y"][b], t["obs"][b])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * b.numel()
            return total / max(order.size, 1)

        def tuning_loss():
            net.eval()
            with torch.inference_mode():
                return float(_pinball(net(t["xt"], t["bt"]), t["yt"], t["ot"]))

        stopper = EarlyStopping(self.patience, what="trajectory head")
        history = fit_epochs(net, train_epoch, tuning_loss, max_epochs=self.max_epochs, callbacks=[stopper])
        return net, history, stopper.best_epoch

    def _quantiles(self, x, base) -> np.ndarray:
        """The members' mean quantiles in normalised units, (n, C, H, 3)."""
        xt, bt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(base)
        with torch.inference_mode():
            return np.mean([net(xt, bt).numpy().astype(np.float64) for net in self.members_], axis=0)

    @staticmethod
    def _conformal(q, y):
        score = np.maximum(q[..., 0] - y, y - q[..., 2])  # NaN where no reading
        adjust = np.zeros(q.shape[1:3])
        count = (~np.isnan(y)).sum(axis=0)
        for j in range(q.shape[1]):  # a loop over codes and horizons (a handful)
            for k in range(q.shape[2]):
                s = score[:, j, k][~np.isnan(score[:, j, k])]
                if s.size:  # the ceil(0.8 (n + 1))-th smallest score (the largest when n is under 4)
                    rank = min(int(np.ceil(COVERAGE * (s.size + 1))), s.size)
                    adjust[j, k] = np.partition(s, rank - 1)[rank - 1]
        return adjust, count

    def predict(self, x, base) -> np.ndarray:
        """Per row, code and horizon: (lower, median, upper) in the codes' units, (n, C, H, 3)."""
        q = self._quantiles(x, base)
        q[..., 0] = np.minimum(q[..., 0] - self.adjust, q[..., 1])
        q[..., 2] = np.maximum(q[..., 2] + self.adjust, q[..., 1])
        return q * self.std[None, :, None, None] + self.mean[None, :, None, None]


def trajectory_frame(
    index: pd.DataFrame, pred: np.ndarray, codes, horizons_days, *, select_codes=None, select_horizons=None
) -> pd.DataFrame:
    """Long format: one row per (index row, code, horizon) with ``forecast`` (the median) and the 80 %
    interval ``lower_80``, ``upper_80``."""
    cj = np.arange(len(codes)) if select_codes is None else np.asarray([list(codes).index(c) for c in select_codes])
    hk = (
        np.arange(len(horizons_days))
        if select_horizons is None
        else np.asarray([list(horizons_days).index(h) for h in select_horizons])
    )
    p = pred[:, cj][:, :, hk]
    n, c, h = p.shape[:3]
    rows = np.repeat(np.arange(n), c * h)
    return pd.DataFrame(
        {
            "subject_id": index["subject_id"].to_numpy()[rows],
            "prediction_time": index["prediction_time"].to_numpy()[rows],
            "code": np.tile(np.repeat(np.asarray(codes, dtype=object)[cj], h), n),
            "horizon_days": np.tile(np.asarray(horizons_days, np.int64)[hk], n * c),
            "forecast": p[..., 1].reshape(-1),
            "lower_80": p[..., 0].reshape(-1),
            "upper_80": p[..., 2].reshape(-1),
        }
    )


def trajectory_of(model):
    """A fitted model's trajectory head, or a ConfigError saying why it has none."""
    tf = getattr(model, "trajectory_", None)
    if tf is None:
        why = getattr(model, "trajectory_skipped_", None) or (
            "it was fitted with trajectory_codes=None"
            if getattr(model, "trajectory_codes", None) is None
            else "it was fitted by a twinml older than the trajectory head"
        )
        raise ConfigError(f"{type(model).__name__} has no trajectory forecasts: {why}")
    return tf


def trajectory_selection(tf, codes, horizons_days):
    """Check a request against what the head forecasts; None means all."""
    for what, asked, have in (("code", codes, tf.codes), ("horizon", horizons_days, tf.horizons_days)):
        if asked is not None:
            if not len(asked):
                raise ConfigError(
                    f"predict_trajectory: the {what}s asked for must be non-empty (None: all of {list(have)})"
                )
            unknown = [a for a in asked if a not in have]
            if unknown:
                raise ConfigError(
                    f"predict_trajectory: {what} {unknown[0]!r} is not forecast by this model; "
                    f"it forecasts {list(have)}"
                )
    return (None if codes is None else list(codes)), (
        None if horizons_days is None else [int(h) for h in horizons_days]
    )
