"""How faithful an explanation is: delete each row's top-attributed events and as many random ones, and
compare how much the risk moves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .._validation import ConfigError
from ._explain import Attributions, _cumulative_logit, _is_record, _label_position, _record_row

__all__ = ["faithfulness"]


def faithfulness(
    model,
    events: pd.DataFrame,
    index: pd.DataFrame,
    attr: Attributions,
    *,
    k: int = 5,
    n_random: int = 5,
    seed: int = 0,
) -> dict:
    """Does removing the ``k`` most attributed events move the risk more than removing ``k`` random ones?

    For each explained row with more than ``k`` events, the label's log-odds is recomputed with the
    top-``k`` events by |attribution| deleted from the sequence, and with ``k`` random events deleted
    (``n_random`` draws). Returns the mean |change| of each, their ratio and the share of rows where
    the top-k change is larger than the mean random change. Sequence models only.
    """
    if not hasattr(model, "net_"):
        raise ConfigError("faithfulness: implemented for sequence models (event deletion); got a tabular model.")
    o, j = _label_position(model, attr.label)
    data = model.featurizer_.transform(events, index)
    rng = np.random.default_rng(seed)
    lengths = data.lengths if not _is_record(model) else np.where(data.readout >= 0, data.lengths, 0)
    rows = np.flatnonzero(lengths > k)
    t = attr.table
    t = t[t["row"].isin(rows)].assign(abs_a=lambda d: d["attribution"].abs())
    top = t.sort_values(["row", "abs_a"], ascending=[True, False], kind="stable").groupby("row").head(k)
    rows = np.unique(top["row"].to_numpy())
    if rows.size == 0:
        return {
            "rows": 0,
            "k": k,
            "top_k_change": float("nan"),
            "random_k_change": float("nan"),
            "ratio": float("nan"),
            "share_rows_top_k_larger": float("nan"),
        }
    base = _log_odds(model, data, rows, None, o, j)
    drop_top = np.zeros((rows.size, int(lengths[rows].max())), bool)
    r_idx = np.searchsorted(rows, top["row"].to_numpy())
    drop_top[r_idx, top["position"].to_numpy()] = True
    d_top = np.abs(_log_odds(model, data, rows, drop_top, o, j) - base)
    d_rand = np.zeros(rows.size)
    for _ in range(n_random):
        score = rng.random(drop_top.shape) + (np.arange(drop_top.shape[1])[None, :] >= lengths[rows, None])
        picks = np.argsort(score, axis=1)[:, :k]
        drop = np.zeros_like(drop_top)
        np.put_along_axis(drop, picks, True, axis=1)
        d_rand += np.abs(_log_odds(model, data, rows, drop, o, j) - base) / n_random
    return {
        "rows": int(rows.size),
        "k": k,
        "top_k_change": float(d_top.mean()),
        "random_k_change": float(d_rand.mean()),
        "ratio": float(d_top.mean() / max(d_rand.mean(), 1e-12)),
        "share_rows_top_k_larger": float((d_top > d_rand).mean()),
    }


def _log_odds(model, data, rows, drop, o, j, batch_size=512):
    """Label log-odds of ``rows``, with the events flagged in ``drop`` (rows x positions) deleted."""
    out = np.empty(rows.size)
    net = model.net_.eval()
    if _is_record(model):  # one row at a time: a flagged event loses its content (the explainer's baseline)
        from ..features import UNKNOWN

        with torch.inference_mode():
            for r, row in enumerate(rows):
                b = _record_row(data, row)
                if drop is not None:
                    gone = torch.from_numpy(drop[r, : b["event_code"].numel()])
                    b["event_code"] = torch.where(gone, UNKNOWN, b["event_code"])
                    b["event_value"] = torch.where(gone, 0.0, b["event_value"])
                out[r] = _cumulative_logit(net(**b)[:, o, : j + 1]).item()
        return out
    with torch.inference_mode():
        for s in range(0, rows.size, batch_size):
            b = data.batch(rows[s : s + batch_size])
            if drop is not None:
                b = _delete(b, drop[s : s + batch_size])
            tb = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}
            logits = net(**tb)
            out[s : s + batch_size] = _cumulative_logit(logits[:, o, : j + 1]).numpy()
    return out


def _delete(b, drop):
    """Remove flagged events and close the gaps (still right-padded)."""
    width = b["code"].shape[1]
    drop = drop[:, :width] & b["mask"]
    keep = b["mask"] & ~drop
    order = np.argsort(~keep, axis=1, kind="stable")
    out = {k: np.take_along_axis(b[k], order, axis=1) for k in ("code", "value", "has_value", "log_days")}
    n = keep.sum(1)
    valid = np.arange(width)[None, :] < n[:, None]
    for k in out:
        out[k] = np.where(valid, out[k], 0).astype(b[k].dtype)
    return out | {"mask": valid, "length": np.maximum(n, 1), "static": b["static"]}
