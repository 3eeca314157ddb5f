"""Explanations with shap: which codes and which time windows drive a model's risk.

Sequence models are explained with shap's ``GradientExplainer`` (expected gradients) on the
event embeddings: the attribution of an event is the sum of its embedding's SHAP values, the
baseline of each event is the same event with its content removed (unknown code, no value, same
time). Tabular models use ``TreeExplainer`` (gradient boosting) or ``LinearExplainer``
(logistic regression, against the training rows' mean features) on their features, each attributed
to the code and window it summarises.

Attributions explain the model's log-odds of the label before the calibrator. Static traits are
held at each row's own values, so they receive no attribution from the sequence explainer.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._validation import ConfigError

__all__ = [
    "Attributions",
    "explain_model",
    "code_importance",
    "window_importance",
    "patient_drivers",
    "WINDOWS_DAYS",
]

WINDOWS_DAYS = (90, 365, 1095)  # edges of the time windows before the prediction time


def _shap():
    """Import shap lazily (3 s), without the deprecation warnings its plotting module raises on import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import shap
    return shap


@dataclass
class Attributions:
    """One row per (explained row, attributed unit): ``row``, ``code``, ``window``, ``attribution``.

    For sequence models a unit is an event (with its ``position`` in the row's sequence and
    ``days_before`` the prediction time; ``window`` is one of the bins of :data:`WINDOWS_DAYS`); for
    tabular models a feature (``window`` is the feature's own window, e.g. ``last 365d``).
    ``seconds`` is the wall time of the explainer; ``method`` says which explainer and settings.
    """

    label: str
    table: pd.DataFrame
    n_rows: int
    seconds: float
    method: str


def _window_names():
    e = WINDOWS_DAYS
    return [f"0-{e[0]}d before"] + [f"{a}-{b}d before" for a, b in zip(e, e[1:])] + [f">{e[-1]}d before", ""]


def _window_of(days):
    names = np.array(_window_names()[:-1], object)
    return names[np.searchsorted(WINDOWS_DAYS, days, side="right")]


def code_importance(attr: Attributions, *, top: int = 20) -> pd.DataFrame:
    """Global importance: per code, mean over explained rows of |sum of its attributions| and the mean signed sum.

    ``rows`` counts the explained rows where the code has a non-zero attribution (for a sequence
    model, the rows whose history holds the code).
    """
    per_row = attr.table.groupby(["row", "code"], observed=True)["attribution"].sum().reset_index()
    per_row = per_row[per_row["attribution"] != 0]
    g = per_row.groupby("code", observed=True)["attribution"]
    out = pd.DataFrame(
        {"mean_abs": g.apply(lambda s: s.abs().sum()) / attr.n_rows, "mean": g.sum() / attr.n_rows, "rows": g.size()}
    )
    return out.sort_values("mean_abs", ascending=False).head(top).reset_index()


def window_importance(attr: Attributions) -> pd.DataFrame:
    """Share of total |attribution| per time window before the prediction time."""
    s = attr.table.groupby("window", sort=False)["attribution"].apply(lambda v: v.abs().sum())
    if "position" in attr.table:  # sequence model: every window bin, in time order
        s = s.reindex(_window_names()[:-1]).fillna(0.0)
    return pd.DataFrame({"window": s.index, "share_of_abs_attribution": (s / max(s.sum(), 1e-12)).to_numpy()})


def patient_drivers(attr: Attributions, *, top: int = 5) -> pd.DataFrame:
    """Per explained row, the ``top`` codes by |attribution| with direction (``raises`` / ``lowers`` risk)."""
    per = attr.table.groupby(["row", "code"], observed=True)["attribution"].sum().reset_index()
    per["abs"] = per["attribution"].abs()
    per = per.sort_values(["row", "abs"], ascending=[True, False], kind="stable")
    per = per.groupby("row").head(top).drop(columns="abs")
    per["direction"] = np.where(per["attribution"] >= 0, "raises", "lowers")
    return per.reset_index(drop=True)


def _label_position(model, label):
    if label not in model.label_columns_:
        raise ConfigError(f"explain: the model has no label {label!r}; it predicts {model.label_columns_}.")
    if hasattr(model, "net_"):
        outcome, _, h = label.rpartition("_")
        return model.outcomes_.index(outcome), model.horizons_.index(int(h[:-1]))
    return model.label_columns_.index(label)


def explain_model(
    model,
    events: pd.DataFrame,
    index: pd.DataFrame,
    *,
    label: str,
    n_samples: int = 16,
    trim_padding: bool = True,
    seed: int = 0,
    progress=None,
) -> Attributions:
    """SHAP attributions of ``label`` for each row of ``index``, for a sequence, record, blend or tabular
    twinml model (a blend: each member's, weighted as the blend weighs their log-odds).

    Parameters
    ----------
    n_samples : int
        Sequence models: expected-gradient samples per row (shap's ``nsamples``; its default is 200).
    trim_padding : bool
        Sequence models: explain each row over its own events only (``False``: over the model's
        padded ``max_len`` window, as a plain call would).
    """
    if type(model).__name__ == "BlendRiskModel":
        return _explain_blend(
            model, events, index, label, n_samples=n_samples, trim_padding=trim_padding, seed=seed, progress=progress
        )
    pos = _label_position(model, label)
    if _is_record(model):
        return _explain_record(
            model, events, index, label, pos, n_samples=n_samples, seed=seed, progress=progress or (lambda m: None)
        )
    if hasattr(model, "net_"):
        return _explain_sequence(
            model,
            events,
            index,
            label,
            pos,
            n_samples=n_samples,
            trim=trim_padding,
            seed=seed,
            progress=progress or (lambda m: None),
        )
    return _explain_tabular(model, events, index, label, pos)


class _EmbeddedRisk(nn.Module):
    """Log-odds of one outcome within one horizon, from already embedded events (one row's length)."""

    def __init__(self, net, outcome, horizon_index, static, log_days, length):
        super().__init__()
        self.net, self.o, self.j = net, outcome, horizon_index
        self.static, self.log_days, self.length = static, log_days, length

    def forward(self, x):
        b, width = x.shape[0], x.shape[1]
        mask = torch.arange(width).unsqueeze(0) < self.length
        length = torch.full((b,), self.length)
        if self.net.kind == "gru":
            h = self.net.encoder(x, mask.expand(b, -1), length)
        else:
            h = self.net.encoder(x, mask.expand(b, -1), length, self.log_days.expand(b, -1))
        logits = self.net.head(self.net.mlp(torch.cat([h, self.net.static(self.static.expand(b, -1))], -1)))
        return _cumulative_logit(logits[:, self.o, : self.j + 1]).unsqueeze(-1)


def _is_record(model) -> bool:
    return type(model.featurizer_).__name__ == "RecordFeaturizer" if hasattr(model, "net_") else False


class _RecordEmbeddedRisk(nn.Module):
    """Log-odds of one outcome within one horizon from one row's embedded events (``E_code + v E_value``
    per event), through the rest of a :class:`~twinml.models._torch_modules.RecordRiskNet`: the
    visit means, the GRU, the readout at the row's last visit."""

    def __init__(self, net, outcome, horizon_index, b):
        super().__init__()
        self.net, self.o, self.j = net, outcome, horizon_index
        n_ev = torch.diff(b["event_offsets"], append=torch.tensor([b["event_code"].numel()]))
        self.visit = torch.repeat_interleave(torch.arange(n_ev.numel()), n_ev)
        self.count = n_ev.clamp(min=1).unsqueeze(-1).float()
        self.visit_features, self.readout = b["visit_features"], int(b["readout"][0])
        self.readout_features, self.static = b["readout_features"], b["static"]

    def forward(self, x):
        net, n = self.net, x.shape[0]
        v = x.new_zeros(n, self.count.shape[0], x.shape[-1]).index_add(1, self.visit, x) / self.count
        states, _ = net.gru(v + net.embed.time(self.visit_features))
        h = states[:, self.readout] + net.gap(self.readout_features)
        logits = net.head(net.mlp(torch.cat([h, net.static(self.static.expand(n, -1))], -1)))
        return _cumulative_logit(logits[:, self.o, : self.j + 1]).unsqueeze(-1)


def _record_row(data, i):
    """Row ``i``'s net inputs with its subject's visits cut at the row's readout (events after it
    cannot matter); None for a row with no event before its prediction time."""
    b = data.batch([i])
    if b["readout"][0] < 0:
        return None
    n_vis = int(b["readout"][0]) + 1
    n_ev = int(b["event_offsets"][n_vis]) if n_vis < b["event_offsets"].size else b["event_code"].size
    out = dict(
        b,
        event_code=b["event_code"][:n_ev],
        event_value=b["event_value"][:n_ev],
        event_offsets=b["event_offsets"][:n_vis],
        visit_slot=b["visit_slot"][:n_vis],
        visit_features=b["visit_features"][:n_vis],
        width=np.int64(n_vis),
    )
    return {
        k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else int(v) for k, v in out.items()
    }


def _explain_blend(model, events, index, label, **kw):
    """Each member's attributions weighted as the blend weighs its log-odds (before calibration): the
    record GRUs' events (each GRU ``w / n`` of the log-odds, summed per event: one row per event however
    many GRUs) and the tabular member's features, side by side in one table."""
    w, records = model.blend_weight(), model.record_members()
    parts = [explain_model(m, events, index, label=label, **kw) for m in records]
    parts.append(explain_model(model.tabular_, events, index, label=label))
    gru_rows = pd.concat(
        [p.table.assign(attribution=p.table["attribution"] * (w / len(records))) for p in parts[:-1]], ignore_index=True
    )
    if len(records) > 1:  # the GRUs explain the same events of the same rows
        keys = [c for c in parts[0].table.columns if c != "attribution"]
        gru_rows = (
            gru_rows.groupby(keys, sort=False, observed=True, dropna=False)["attribution"]
            .sum()
            .reset_index()[list(parts[0].table.columns)]
        )
    tables = [
        gru_rows.assign(member="record"),
        parts[-1].table.assign(attribution=parts[-1].table["attribution"] * (1.0 - w), member="tabular"),
    ]
    gru = parts[0].method if len(records) == 1 else f"the mean of {len(records)} GRUs, each {parts[0].method}"
    method = (
        f"blend of {w:g} x ({gru}) and {1 - w:g} x ({parts[-1].method}), on the blend's log-odds before calibration"
    )
    return Attributions(
        label, pd.concat(tables, ignore_index=True), parts[0].n_rows, sum(p.seconds for p in parts), method
    )


def _explain_record(model, events, index, label, pos, *, n_samples, seed, progress):
    from ..features import UNKNOWN

    shap = _shap()
    data = model.featurizer_.transform(events, index)
    vocab = np.concatenate([["<pad>", "<rare code>"], model.featurizer_.vocabulary_.astype(object)])
    net = model.net_.eval()
    rng_state = np.random.get_state()
    np.random.seed(seed)
    parts, t0 = [], time.perf_counter()
    try:
        for i in range(len(data)):
            b = _record_row(data, i)
            if b is None:
                continue
            code, value = b["event_code"], b["event_value"]
            with torch.no_grad():
                x = (net.embed.code.weight[code] + value.unsqueeze(-1) * net.embed.value.weight[code]).unsqueeze(0)
                base = net.embed.code.weight[torch.full_like(code, UNKNOWN)].unsqueeze(0)
            f = _RecordEmbeddedRisk(net, pos[0], pos[1], b)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                explainer = shap.GradientExplainer(f, base, batch_size=min(n_samples, 64))
                sv = explainer.shap_values(x, nsamples=n_samples)
            a = np.asarray(sv).reshape(code.numel(), -1).sum(-1)
            t_ev = data.time[data.lo[i] : data.lo[i] + code.numel()]
            days = (data.prediction_time[i] - t_ev) / 86_400e6
            parts.append(
                pd.DataFrame(
                    {
                        "row": i,
                        "position": np.arange(code.numel()),
                        "code": vocab[code.numpy()],
                        "days_before": days,
                        "window": _window_of(days),
                        "attribution": a,
                    }
                )
            )
            if (i + 1) % 200 == 0:
                progress(f"explained {i + 1:,} / {len(data):,} rows ({time.perf_counter() - t0:.1f}s)")
    finally:
        np.random.set_state(rng_state)
    table = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["row", "position", "code", "days_before", "window", "attribution"])
    )
    method = (
        f"shap.GradientExplainer on event embeddings of the whole record, nsamples={n_samples}, "
        "baseline = events without content"
    )
    return Attributions(label, table, len(data), time.perf_counter() - t0, method)


def _cumulative_logit(hazard_logits):
    """logit(1 - prod(1 - sigmoid(z))) computed stably: log(expm1(sum softplus(z)))."""
    s = torch.nn.functional.softplus(hazard_logits).sum(-1)
    return torch.log(torch.expm1(s).clamp_min(1e-12))


def _explain_sequence(model, events, index, label, pos, *, n_samples, trim, seed, progress):
    shap = _shap()
    data = model.featurizer_.transform(events, index)
    vocab = np.concatenate([["<pad>", "<rare code>"], model.featurizer_.vocabulary_.astype(object)])
    net = model.net_.eval()
    rng_state = np.random.get_state()
    np.random.seed(seed)  # shap draws its interpolation points from numpy's global generator
    parts, t0 = [], time.perf_counter()
    try:
        for i in range(len(data)):
            b = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.batch([i]).items()}
            n = int(data.lengths[i])
            if n == 0:
                continue
            width = n if trim else model.max_len
            b = _pad_to(b, width)
            with torch.no_grad():
                x = net.embed(b["code"], b["value"], b["has_value"], b["log_days"])
                base = net.embed(
                    torch.where(b["mask"], 1, 0),
                    torch.zeros_like(b["value"]),
                    torch.zeros_like(b["has_value"]),
                    b["log_days"],
                )
            f = _EmbeddedRisk(net, pos[0], pos[1], b["static"], b["log_days"], n)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                explainer = shap.GradientExplainer(f, base, batch_size=min(n_samples, 64))
                sv = explainer.shap_values(x, nsamples=n_samples)
            a = np.asarray(sv).reshape(width, -1).sum(-1)[:n]
            days = np.expm1(b["log_days"][0, :n].numpy().astype(float))
            parts.append(
                pd.DataFrame(
                    {
                        "row": i,
                        "position": np.arange(n),
                        "code": vocab[b["code"][0, :n].numpy()],
                        "days_before": days,
                        "window": _window_of(days),
                        "attribution": a,
                    }
                )
            )
            if (i + 1) % 200 == 0:
                progress(f"explained {i + 1:,} / {len(data):,} rows ({time.perf_counter() - t0:.1f}s)")
    finally:
        np.random.set_state(rng_state)
    secs = time.perf_counter() - t0
    table = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["row", "position", "code", "days_before", "window", "attribution"])
    )
    method = (
        f"shap.GradientExplainer on event embeddings, nsamples={n_samples}, "
        f"{'own length' if trim else f'padded to {model.max_len}'}, baseline = events without content"
    )
    return Attributions(label, table, len(data), secs, method)


def _pad_to(b, width):
    n = b["code"].shape[1]
    if n >= width:
        return b
    pad = width - n
    out = dict(b)
    for k in ("code", "value", "has_value", "log_days", "mask"):
        out[k] = torch.nn.functional.pad(b[k], (0, pad))
    return out


def _explain_tabular(model, events, index, label, j):
    t0 = time.perf_counter()
    est = model.classifier_.estimators_[j]
    if est is None:
        raise ConfigError(f"explain: label {label!r} had one class in training; there is nothing to explain.")
    X = model.transform_features(events, index)
    # subject shares (LogOddsMean): the model's log-odds are its members' mean, so their mean SHAP values
    # are the model's, exactly
    members = getattr(est, "members", None) or [est]
    explained = [_shap_values(model, m, X) for m in members]
    sv = np.mean([v for v, _ in explained], axis=0)
    names = model.feature_names_
    code, window = _feature_units(names)
    rows, cols = np.nonzero(sv)
    table = pd.DataFrame({"row": rows, "code": code[cols], "window": window[cols], "attribution": sv[rows, cols]})
    method = f"shap.{explained[0][1]} on tabular features"
    if len(members) > 1:
        method += f", the mean over the {len(members)} subject-share classifiers"
    return Attributions(label, table, X.shape[0], time.perf_counter() - t0, method)


def _shap_values(model, est, X):
    """One fitted binary classifier's SHAP values on ``X`` (rows x features, log-odds) and its explainer."""
    shap = _shap()
    if hasattr(est, "steps"):
        prep, clf = est[:-1], est[-1]
        Xt = prep.transform(X)
    else:  # LightGBMClassifier takes the sparse matrix as it is; shap reads its booster
        prep, clf, Xt = None, est.estimator_, X
    if type(clf).__name__ == "LogisticRegression":
        # against the training rows' mean features (kept by fit), so one patient can be explained alone;
        # models fitted before twinml kept them are explained against the rows explained
        means = getattr(model, "feature_means_", None)
        background = prep.transform(X[: min(X.shape[0], 1000)] if means is None else means[None, :])
        sv = shap.LinearExplainer(clf, background).shap_values(Xt)
    else:
        with warnings.catch_warnings():  # shap notes that LightGBM's output became a per-class list; handled below
            warnings.filterwarnings("ignore", message="LightGBM binary classifier with TreeExplainer")
            sv = shap.TreeExplainer(clf).shap_values(Xt)
    if isinstance(sv, list):  # one array per class: the positive class's
        sv = sv[-1]
    sv = np.asarray(sv.toarray() if hasattr(sv, "toarray") else sv)
    if sv.ndim == 3:  # (rows, features, classes)
        sv = sv[..., -1]
    explainer = "LinearExplainer" if type(clf).__name__ == "LogisticRegression" else "TreeExplainer"
    return sv, explainer


def _feature_units(names):
    """Feature name -> (code, window): ``LOINC/4548-4/365d/last`` -> (``LOINC/4548-4``, ``last 365d``)."""
    code, window = [], []
    for n in names:
        if n.startswith("static//") or n.startswith("age"):
            code.append("static traits and age")
            window.append("static traits and age")
            continue
        c, w, _ = n.rsplit("/", 2)
        code.append(c)
        window.append("all history" if w == "all" else f"last {w}")
    return np.array(code, object), np.array(window, object)
