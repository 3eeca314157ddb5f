"""Batch scoring of patient panels with a registered model: local engine or Spark, identical scores."""

from ._score import ENGINES, NO_EVENTS, SCORED, ScoreReport, read_score_metadata, score, score_events

__all__ = ["score", "score_events", "ScoreReport", "ENGINES", "SCORED", "NO_EVENTS", "read_score_metadata"]
