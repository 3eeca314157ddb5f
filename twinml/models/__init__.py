"""Risk models with the scikit-learn contract.

``SequenceRiskModel``, ``RecordRiskModel`` and ``BlendRiskModel`` (torch) are imported lazily so that the
tabular baselines do not pay for torch. ``TreatmentResponseModel`` and ``PlanPrediction`` live in
:mod:`twinml.whatif` and are reachable here too; :mod:`twinml.models.parts` holds the sequence model's
building blocks that the what-if model is made of.
"""

from ._bands import RiskBands
from ._boosting import LIGHTGBM_DEFAULTS, LightGBMClassifier
from ._multilabel import BASELINES, MaskedMultiLabelClassifier, make_baseline
from ._protocol import RiskModel
from ._recalibrated import RecalibratedModel, cloglog_update, fit_cloglog, outcome_of
from ._shares import LogOddsMean, SubjectShareClassifier, subject_shares
from ._tabular_model import LIGHTGBM_SUBJECT_SHARES, TabularRiskModel, label_columns_of, label_matrix

__all__ = [
    "LIGHTGBM_DEFAULTS",
    "LIGHTGBM_SUBJECT_SHARES",
    "MaskedMultiLabelClassifier",
    "LightGBMClassifier",
    "make_baseline",
    "BASELINES",
    "TabularRiskModel",
    "SubjectShareClassifier",
    "LogOddsMean",
    "subject_shares",
    "SequenceRiskModel",
    "RecordRiskModel",
    "BlendRiskModel",
    "TreatmentResponseModel",
    "PlanPrediction",
    "label_columns_of",
    "label_matrix",
    "RiskBands",
    "RiskModel",
    "RecalibratedModel",
    "fit_cloglog",
    "cloglog_update",
    "outcome_of",
]


def __getattr__(name):
    if name == "SequenceRiskModel":
        from ._sequence_model import SequenceRiskModel

        return SequenceRiskModel
    if name == "RecordRiskModel":
        from ._record_model import RecordRiskModel

        return RecordRiskModel
    if name == "BlendRiskModel":
        from ._blend import BlendRiskModel

        return BlendRiskModel
    if name in ("TreatmentResponseModel", "PlanPrediction"):  # they live in twinml.whatif
        from .. import whatif

        return getattr(whatif, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
