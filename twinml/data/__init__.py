"""Events in the MEDS standard: reading, validation and atomic writing."""

from ._meds_io import read_code_metadata, read_meds, read_subject_splits, validate_events_table, write_meds

__all__ = ["read_meds", "read_subject_splits", "read_code_metadata", "validate_events_table", "write_meds"]
