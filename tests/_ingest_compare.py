"""Compare two ingested MEDS directories: same events, same quarantined rows, same counts."""

import json

import pandas as pd
import pyarrow.parquet as pq

from twinml.data import read_meds


def _events(root):
    ev = read_meds(root)
    ev["code"] = ev["code"].astype(str)
    keys = ["subject_id", "time", "code", "numeric_value"]
    if "text_value" in ev:  # a category whose order follows the order rows were read in
        ev["text_value"] = ev["text_value"].astype(object)
        keys.append("text_value")
    return ev.sort_values(keys, na_position="first").reset_index(drop=True)


def _quarantine(root, with_rows):
    q = pq.read_table(root / "quality" / "quarantine.parquet").to_pandas()
    q = q if with_rows else q.drop(columns="row")
    return q.sort_values(list(q.columns), na_position="first").reset_index(drop=True)


def assert_same_ingestion(a, b, *, with_rows=True):
    """``with_rows=False`` where chunking may renumber rows (Synthea start/stop rows, OMOP period starts/ends)."""
    pd.testing.assert_frame_equal(_events(a), _events(b))
    pd.testing.assert_frame_equal(_quarantine(a, with_rows), _quarantine(b, with_rows))
    summary = [json.loads((r / "quality" / "summary.json").read_text()) for r in (a, b)]
    assert summary[0] == summary[1]
