"""Leakage-free features: for (subject, prediction_time) only events at or before that time."""

from ._tabular import TabularFeaturizer

__all__ = ["TabularFeaturizer"]
