"""Risk models with the scikit-learn contract."""

from ._multilabel import BASELINES, MaskedMultiLabelClassifier, make_baseline
from ._tabular_model import TabularRiskModel, label_columns_of, label_matrix

__all__ = ["MaskedMultiLabelClassifier", "make_baseline", "BASELINES", "TabularRiskModel",
           "label_columns_of", "label_matrix"]
