"""Coded text results as codes of their own.

A MEDS row may carry its result as text (``text_value``) rather than a number: a smoking status, a
urine dipstick reading, a survey answer. ``LOINC/72166-2`` with the text ``Never smoked tobacco
(finding)`` then reads as the code ``LOINC/72166-2//Never smoked tobacco (finding)``, which a
featurizer counts, windows and dates like any other code.

Only answers recorded for at least ``min_subjects`` distinct training subjects become codes: free
text (an address, a name, a note) belongs to one subject and never qualifies, so no subject-level
text enters a fitted vocabulary, and a model saved with it holds none. Rows whose text does not
qualify keep their plain code.

>>> import pandas as pd
>>> events = pd.DataFrame({
...     "subject_id": [1, 1, 2, 3],
...     "time": pd.to_datetime(["2020-01-01"] * 4),
...     "code": pd.Categorical(["LOINC/72166-2", "LOINC/56799-0", "LOINC/72166-2", "LOINC/72166-2"]),
...     "numeric_value": [None, None, None, None],
...     "text_value": pd.Categorical(["Never smoker", "1 Main St", "Never smoker", "Never smoker"]),
... })
>>> codes = fit_text_codes(events, min_subjects=2)
>>> codes.tolist()
['LOINC/72166-2//Never smoker']
>>> with_text_codes(events, codes)["code"].astype(str).tolist()
['LOINC/72166-2//Never smoker', 'LOINC/56799-0', 'LOINC/72166-2//Never smoker', 'LOINC/72166-2//Never smoker']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["fit_text_codes", "with_text_codes", "TEXT_SEPARATOR"]

TEXT_SEPARATOR = "//"


def _text_pairs(events: pd.DataFrame):
    """Rows with a text and no numeric value: their row positions and (code, text) pair keys, the
    distinct pairs' ``code//text`` strings, and each row's index into those distinct pairs."""
    if "text_value" not in events or not len(events):
        return None
    code = events["code"].astype("category")
    text = events["text_value"].astype("category")
    t = text.cat.codes.to_numpy(np.int64)
    rows = np.flatnonzero((t >= 0) & events["numeric_value"].isna().to_numpy())
    if rows.size == 0:
        return None
    c = code.cat.codes.to_numpy(np.int64)[rows]
    key = c * text.cat.categories.size + t[rows]
    uniq, inverse = np.unique(key, return_inverse=True)
    code_names = np.asarray(code.cat.categories, dtype=object).astype(str)
    text_names = np.asarray(text.cat.categories, dtype=object).astype(str)
    n_text = text.cat.categories.size
    names = np.char.add(np.char.add(code_names[uniq // n_text], TEXT_SEPARATOR), text_names[uniq % n_text])
    return rows, inverse, names.astype(object)


def fit_text_codes(events: pd.DataFrame, *, min_subjects: int) -> np.ndarray:
    """The ``code//text`` codes of text answers recorded for at least ``min_subjects`` distinct subjects.

    Parameters
    ----------
    events : DataFrame
        MEDS events (training subjects'), optionally with a ``text_value`` column; rows that carry a
        numeric value are not text answers.
    min_subjects : int
        Distinct subjects an answer must be recorded for (0 or less: no text codes).

    Returns
    -------
    ndarray of str, sorted
    """
    found = _text_pairs(events) if min_subjects > 0 else None
    if found is None:
        return np.array([], dtype=str)
    rows, pair, names = found
    subject = events["subject_id"].to_numpy(np.int64)[rows]
    distinct = pd.DataFrame({"pair": pair, "subject": subject}).drop_duplicates()
    n_subjects = np.bincount(distinct["pair"].to_numpy(), minlength=names.size)
    return np.sort(names[n_subjects >= min_subjects].astype(str))


def with_text_codes(events: pd.DataFrame, text_codes) -> pd.DataFrame:
    """``events`` with each text answer listed in ``text_codes`` read as that code (other rows as they are).

    The frame is returned unchanged (not copied) when it has no text answer in ``text_codes``.
    """
    text_codes = np.asarray(text_codes, dtype=object)
    found = _text_pairs(events) if text_codes.size else None
    if found is None:
        return events
    rows, pair, names = found
    known = np.isin(names, text_codes)
    if not known[pair].any():
        return events
    code = events["code"].astype("category")
    old = code.cat.categories
    added = pd.Index(names[known]).difference(old)
    categories = old.append(added)
    codes = code.cat.codes.to_numpy(np.int64).copy()
    hit = known[pair]
    codes[rows[hit]] = categories.get_indexer(names[pair[hit]])
    return events.assign(code=pd.Categorical.from_codes(codes.astype(np.int32), categories=categories))
