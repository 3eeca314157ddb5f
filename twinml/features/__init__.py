"""Leakage-free features: for (subject, prediction_time) only events at or before that time."""

from ._future import readings_near_horizons
from ._record import RecordData, RecordFeaturizer, last_readings, last_value_features
from ._sequence import END_OF_RECORD, PAD, UNKNOWN, SequenceData, SequenceFeaturizer
from ._tabular import TabularFeaturizer
from ._text import TEXT_SEPARATOR, fit_text_codes, with_text_codes

__all__ = [
    "TabularFeaturizer",
    "SequenceFeaturizer",
    "SequenceData",
    "RecordFeaturizer",
    "RecordData",
    "PAD",
    "UNKNOWN",
    "last_readings",
    "last_value_features",
    "readings_near_horizons",
    "END_OF_RECORD",
    "fit_text_codes",
    "with_text_codes",
    "TEXT_SEPARATOR",
]
