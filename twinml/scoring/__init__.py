"""Batch scoring of patient panels with a registered model: local engine or Spark, identical scores;
and the living twin: a saved state per subject, advanced over new events (:func:`update`).

``TwinState``, ``advance`` and ``state_risks`` (the state's arithmetic, torch) are imported lazily.
"""

from ._score import ENGINES, NO_EVENTS, SCORED, ScoreReport, read_score_metadata, score, score_events
from ._twin import MANIFEST, UpdateReport, read_state, update

__all__ = [
    "score",
    "score_events",
    "ScoreReport",
    "ENGINES",
    "SCORED",
    "NO_EVENTS",
    "read_score_metadata",
    "update",
    "UpdateReport",
    "read_state",
    "MANIFEST",
    "TwinState",
    "advance",
    "state_risks",
]


def __getattr__(name):
    if name in ("TwinState", "advance", "state_risks"):
        from ..models import twin as _twin

        return getattr(_twin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
