"""The model as an MLflow pyfunc: MEDS events in, risks per outcome and horizon out."""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from .._validation import ConfigError
from ..features import TEXT_SEPARATOR

__all__ = ["RiskModelPyfunc", "synthetic_input_example", "prediction_index", "as_pyfunc_input", "text_codes"]


def as_pyfunc_input(events: pd.DataFrame) -> pd.DataFrame:
    """Events as the pyfunc signature wants them: ``code`` (and ``text_value``) as plain strings (not categorical).

    MLflow's schema enforcement does not convert pandas categoricals, which ``read_meds`` returns.
    """
    out = events.assign(code=events["code"].astype(str))
    if "text_value" in out:
        out["text_value"] = out["text_value"].astype(object).where(out["text_value"].notna(), None)
    return out


def text_codes(model) -> list[str]:
    """The ``code//text`` codes a fitted model reads from text answers (its members' too, for a blend)."""
    featurizers = [getattr(model, "featurizer_", None), getattr(getattr(model, "tabular_", None), "featurizer_", None)]
    return sorted({str(c) for f in featurizers if f is not None for c in getattr(f, "text_codes_", ())})


def prediction_index(events: pd.DataFrame, prediction_time=None) -> pd.DataFrame:
    """One row per subject: at ``prediction_time`` if given, else at the subject's last event."""
    subjects = pd.unique(events["subject_id"])
    if prediction_time is not None:
        t = pd.Timestamp(prediction_time).as_unit("us")
        return pd.DataFrame({"subject_id": subjects, "prediction_time": np.full(subjects.size, t.to_datetime64())})
    last = events.dropna(subset=["time"]).groupby("subject_id", sort=False)["time"].max()
    return pd.DataFrame({"subject_id": subjects, "prediction_time": last.reindex(subjects).to_numpy("datetime64[us]")})


class RiskModelPyfunc(PythonModel):
    """Wraps a fitted :class:`~twinml.models.TabularRiskModel` or :class:`~twinml.models.SequenceRiskModel`.

    ``predict(events, params={"prediction_time": "2019-01-01"})`` takes MEDS events
    (``subject_id``, ``time``, ``code`` as strings — see :func:`as_pyfunc_input` — and
    ``numeric_value``) and returns one row per subject with the risk of every label column;
    events after the prediction time are ignored (the leakage rule). Without a prediction
    time each subject is scored at its last event.

    ``params={"output": "trajectory"}`` returns the trajectory forecasts instead (a sequence model
    fitted with a trajectory head): one row per subject, code and horizon with ``forecast``,
    ``lower_80`` and ``upper_80`` (see ``predict_trajectory``).
    """

    OUTPUTS = ("risk", "trajectory")

    def __init__(self, model):
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        events = model_input.copy()
        events["time"] = pd.to_datetime(events["time"]).astype("datetime64[us]")
        events["code"] = events["code"].astype("category")
        if "text_value" in events:
            events["text_value"] = events["text_value"].astype("category")
        if "numeric_value" not in events:
            events["numeric_value"] = np.nan
        events["numeric_value"] = events["numeric_value"].astype("float32")
        events = events.sort_values(["subject_id", "time"], kind="stable", na_position="first")
        params = params or {}
        output = params.get("output") or "risk"
        if output not in self.OUTPUTS:
            raise ConfigError(
                f"pyfunc predict: params 'output' must be one of {list(self.OUTPUTS)}. Got {output!r} instead."
            )
        if output == "trajectory" and not getattr(self.model, "trajectory_codes_", None):
            raise ConfigError(
                f"pyfunc predict: this {type(self.model).__name__} has no trajectory forecasts "
                "(only a sequence model fitted with trajectory_codes has); use output 'risk'."
            )
        index = prediction_index(events, params.get("prediction_time") or None)
        events = events.reset_index(drop=True)
        if output == "trajectory":
            return self.model.predict_trajectory(events, index)
        return self.model.predict_risk(events, index)


def synthetic_input_example(model, n_codes: int = 4) -> pd.DataFrame:
    """A made-up patient built from the vocabulary (no real subject's data reaches MLflow)."""
    vocab = list(model.featurizer_.vocabulary_[:n_codes])
    means = model.featurizer_.value_mean_[:n_codes]
    numeric = model.featurizer_.numeric_[:n_codes]
    rows = [{"subject_id": 0, "time": pd.Timestamp("1960-01-01"), "code": "MEDS_BIRTH", "numeric_value": np.nan}]
    for i, (code, mean, num) in enumerate(zip(vocab, means, numeric)):
        rows.append(
            {
                "subject_id": 0,
                "time": pd.Timestamp("2019-01-01") + pd.Timedelta(days=30 * i),
                "code": code,
                "numeric_value": float(round(mean, 1)) if num else np.nan,
            }
        )
    answers = text_codes(model)
    if answers:  # the signature then keeps text_value (MLflow drops input columns it does not name)
        code, _, text = answers[0].partition(TEXT_SEPARATOR)
        rows.append({"subject_id": 0, "time": pd.Timestamp("2019-06-01"), "code": code, "numeric_value": np.nan})
        rows = [{**r, "text_value": None} for r in rows[:-1]] + [{**rows[-1], "text_value": text}]
    df = pd.DataFrame(rows)
    df["time"] = df["time"].astype("datetime64[us]")
    df["numeric_value"] = df["numeric_value"].astype("float32")
    return df
