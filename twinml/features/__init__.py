"""Leakage-free features: for (subject, prediction_time) only events at or before that time."""

from ._record import RecordData, RecordFeaturizer
from ._sequence import PAD, UNKNOWN, SequenceData, SequenceFeaturizer
from ._tabular import TabularFeaturizer

__all__ = ["TabularFeaturizer", "SequenceFeaturizer", "SequenceData", "RecordFeaturizer", "RecordData", "PAD", "UNKNOWN"]
