"""The contract every fitted twinml risk model keeps (for type checking; no behaviour)."""

from __future__ import annotations

from typing import Protocol

import pandas as pd

__all__ = ["RiskModel"]


class RiskModel(Protocol):
    """What the audit, scoring and the twin page read from a fitted model.

    :class:`TabularRiskModel`, :class:`SequenceRiskModel`, :class:`RecordRiskModel`,
    :class:`BlendRiskModel` and :class:`TreatmentResponseModel` all keep it once fitted.
    """

    label_columns_: list[str]

    def predict_risk(self, events: pd.DataFrame, index: pd.DataFrame, *, calibrated: bool = True) -> pd.DataFrame:
        """Risk per label column for each row of ``index`` (``subject_id``, ``prediction_time``)."""
        ...
