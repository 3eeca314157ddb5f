"""The what-if twin from the outside: risk per plan for chosen patients, as tables and plots.

``what_if`` loads nothing itself: give it a fitted :class:`~twinml.whatif.TreatmentResponseModel`
(``twinml whatif`` loads one from MLflow), MEDS events and the plans to compare. Plans are matched
to the model's plans by what they start (codes and start day), so a plans file may rename them;
a plan the model was not trained on is reported for every patient as outside support.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .._format import percent
from .._io import atomic_directory
from .._plotting import Display, png_data_uri
from .._validation import ConfigError
from ..cohort import PlanSet
from ._prediction import PlanPrediction

__all__ = [
    "what_if",
    "WhatIfResult",
    "match_plans",
    "plan_curves_figure",
    "PlanCurvesDisplay",
    "write_whatif",
    "what_if_from_uri",
    "parse_subject_ids",
    "NOT_TRAINED",
]

NOT_TRAINED = "not a plan the model was trained on"


@dataclass
class WhatIfResult:
    prediction: PlanPrediction  # in the order of the asked plans
    descriptions: dict[str, str]

    def table(self) -> pd.DataFrame:
        return self.prediction.table()


def match_plans(model_plans: PlanSet, asked: PlanSet) -> dict[str, str | None]:
    """Asked plan name -> the model's plan that starts the same codes at the same time (None if none)."""

    def key(p):
        return frozenset(p.codes), p.start_days if p.codes else 0

    by_key = {key(p): name for name, p in model_plans.plans.items()}
    return {name: by_key.get(key(asked.plans[name])) for name in asked.names}


def what_if(model, events: pd.DataFrame, index: pd.DataFrame, plans: PlanSet | None = None) -> WhatIfResult:
    """Risk curves under each plan for the rows of ``index`` (``subject_id``, ``prediction_time``)."""
    plans = plans or model.plans_
    mapping = match_plans(model.plans_, plans)
    if mapping[plans.reference] is None:
        raise ConfigError(
            f"plans: the reference plan must start nothing, like the model's reference {model.plans_.reference!r}."
        )
    pred = model.predict_plans(events, index)
    pos = {name: pred.plans.index(m) if m is not None else None for name, m in mapping.items()}
    n = len(pred.index)
    names = plans.names

    def take(arr, fill):
        shape = (n, len(names)) + arr.shape[2:]
        out = np.full(shape, fill, dtype=arr.dtype)
        for j, name in enumerate(names):
            if pos[name] is not None:
                out[:, j] = arr[:, pos[name]]
        return out

    reason = take(pred.reason, NOT_TRAINED)
    prop = take(pred.propensity, np.nan)
    res = PlanPrediction(
        index=pred.index,
        plans=names,
        outcomes=pred.outcomes,
        horizons=pred.horizons,
        **{a: take(getattr(pred, a), np.nan) for a in ("risk", "risk_lo", "risk_hi")},
        **{a: take(getattr(pred, a), np.nan) for a in ("effect", "effect_lo", "effect_hi")},
        propensity=prop,
        in_support=reason == "",
        reason=reason,
        band=pred.band,
    )
    desc = {name: plans.plans[name].description or name for name in names}
    return WhatIfResult(res, desc)


def parse_subject_ids(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]`` (the ``--subjects`` option)."""
    try:
        ids = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--subjects: expected comma-separated integer subject ids; got {text!r}.") from None
    if not ids:
        raise ConfigError("--subjects: give at least one subject id.")
    return ids


def what_if_from_uri(
    model_uri: str,
    meds_dir,
    subjects: str | list[int],
    out,
    *,
    at=None,
    plans=None,
    html_report: bool = False,
    overwrite: bool = False,
    tracking_uri: str | None = None,
) -> WhatIfResult:
    """``twinml whatif``: load a registered what-if model, compare plans for ``subjects`` of a MEDS
    directory at ``at`` (default: each subject's last event) and write :func:`write_whatif`'s files.

    ``plans`` is a plans YAML path (default: the model's own plans); ``subjects`` a list of ids or the
    ``--subjects`` text. ``out`` is refused before anything is loaded when it exists.
    """
    from .._io import refuse_existing
    from ..cohort import load_plans
    from ..data import read_meds
    from ..tracking import load_registered_model, prediction_index

    ids = parse_subject_ids(subjects) if isinstance(subjects, str) else list(subjects)
    if not ids:
        raise ConfigError("--subjects: give at least one subject id.")
    refuse_existing(out, overwrite=overwrite)
    loaded = load_registered_model(model_uri, tracking_uri=tracking_uri)
    if not hasattr(loaded.model, "predict_plans"):
        raise ConfigError(
            f"--model {model_uri}: a {type(loaded.model).__name__}, not a what-if model; "
            "train one with model.kind: whatif and task.treatment."
        )
    ev = read_meds(meds_dir)
    ev = ev[ev["subject_id"].isin(ids)].reset_index(drop=True)
    missing = sorted(set(ids) - set(ev["subject_id"].unique()))
    if missing:
        raise ConfigError(
            f"--subjects: subject {missing[0]} has no events in {meds_dir} ({len(missing)} of {len(ids)} missing)."
        )
    result = what_if(loaded.model, ev, prediction_index(ev, at), load_plans(plans) if plans else None)
    write_whatif(result, out, html_report=html_report, overwrite=overwrite)
    return result


def plan_curves_figure(result: WhatIfResult, row: int):
    """:class:`PlanCurvesDisplay`'s figure (a matplotlib Figure)."""
    return PlanCurvesDisplay(result, row).plot().figure_


@dataclass
class PlanCurvesDisplay(Display):
    """Risk against horizon under each plan (one panel per outcome), with the band; for row ``row`` of
    a :class:`WhatIfResult`. Plans outside support are not drawn; with none in support it says why."""

    result: WhatIfResult
    row: int

    def _draw(self, plt):
        return _plan_curves(plt, self.result, self.row)


def _plan_curves(plt, result: WhatIfResult, row: int):
    p = result.prediction
    n_out = len(p.outcomes)
    fig, axes = plt.subplots(1, n_out, figsize=(3.2 * n_out, 3.2), squeeze=False)
    x = np.array([0] + list(p.horizons))
    for k, outcome in enumerate(p.outcomes):
        ax = axes[0, k]
        for j, plan in enumerate(p.plans):
            if not p.in_support[row, j]:
                continue
            y = np.r_[0.0, p.risk[row, j, k]]
            (line,) = ax.plot(x, 100 * y, marker="o", ms=3, label=result.descriptions[plan])
            ax.fill_between(
                x,
                100 * np.r_[0.0, p.risk_lo[row, j, k]],
                100 * np.r_[0.0, p.risk_hi[row, j, k]],
                color=line.get_color(),
                alpha=0.15,
                lw=0,
            )
        ax.set_title(outcome)
        ax.set_xlabel("days after the prediction time")
        ax.set_xticks(x)
        if k == 0:
            ax.set_ylabel("risk (%)")
    if p.in_support[row].any():
        axes[0, 0].legend(fontsize=7, loc="upper left")
    else:  # nothing to draw: say why rather than show empty axes
        fig.text(0.5, 0.5, "no plan is in the support of the training data for this patient", ha="center")
    subject = p.index["subject_id"].iloc[row]
    t = pd.Timestamp(p.index["prediction_time"].iloc[row]).date()
    fig.suptitle(f"subject {subject} at {t}: risk under each plan ({int(p.band * 100)}% bands)", fontsize=9)
    fig.tight_layout()
    return fig


def write_whatif(result: WhatIfResult, out: Path, *, html_report: bool = False, overwrite: bool = False) -> Path:
    """Write ``whatif.csv``, one ``curves_<subject>.png`` per row (and ``report.html``), all at once."""
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        table = result.table()
        table.to_csv(tmp / "whatif.csv", index=False)
        pngs = []
        for row in range(len(result.prediction.index)):
            sid = result.prediction.index["subject_id"].iloc[row]
            name = f"curves_{sid}_{pd.Timestamp(result.prediction.index['prediction_time'].iloc[row]):%Y%m%d}.png"
            data = PlanCurvesDisplay(result, row).png()
            (tmp / name).write_bytes(data)
            pngs.append((row, data))
        if html_report:
            (tmp / "report.html").write_text(_render_html(result, table, pngs, png_data_uri), encoding="utf-8")
    return out


def _render_html(result, table, pngs, uri):
    pct = partial(percent, missing="")  # an estimate outside support: an empty cell
    p = result.prediction
    parts = [
        "<!doctype html><meta charset='utf-8'><title>twinml what-if</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px;text-align:right}</style>",
        f"<h1>What-if: risk under each plan</h1><p>Effects are against <b>{html.escape(p.plans[0])}</b>; "
        f"bands are {int(p.band * 100)}% bootstrap bands. A plan outside the data's support is not estimated.</p>",
    ]
    for row, data in pngs:
        sid, t = p.index["subject_id"].iloc[row], pd.Timestamp(p.index["prediction_time"].iloc[row]).date()
        sub = table[(table["subject_id"] == sid) & (table["prediction_time"] == p.index["prediction_time"].iloc[row])]
        parts.append(f"<h2>Subject {html.escape(str(sid))} at {t}</h2><img src='{uri(data)}' alt='risk curves'>")
        parts.append(
            "<table><tr><th>plan</th><th>outcome</th><th>days</th><th>risk</th><th>band</th>"
            "<th>effect</th><th>band</th><th>support</th></tr>"
        )
        for r in sub.itertuples():
            support = "yes" if r.in_support else html.escape(f"no: {r.support_note}")
            parts.append(
                f"<tr><td>{html.escape(r.plan)}</td><td>{html.escape(r.outcome)}</td><td>{r.horizon_days}</td>"
                f"<td>{pct(r.risk)}</td><td>{pct(r.risk_lo)}–{pct(r.risk_hi)}</td>"
                f"<td>{pct(r.effect)}</td><td>{pct(r.effect_lo)}–{pct(r.effect_hi)}</td>"
                f"<td>{support}</td></tr>"
            )
        parts.append("</table>")
    return "\n".join(parts)
