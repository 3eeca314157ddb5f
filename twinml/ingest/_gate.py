"""The data-quality gate every ingestion source passes through.

Rows come in as raw strings or values from a source table; each row is either kept (typed
as a MEDS event) or quarantined with the first rule it breaks. Rows in = rows kept + rows
quarantined, always: the gate checks this identity itself and raises if it ever fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["QualityGate", "GateResult", "PLAUSIBLE_RANGES", "REASONS", "exact_int"]

# Physiologically possible ranges (not normal ranges) for common labs and vitals, by code.
PLAUSIBLE_RANGES: dict[str, tuple[float, float, str]] = {
    "LOINC/4548-4": (2.0, 25.0, "%"),  # HbA1c
    "LOINC/2345-7": (10.0, 2000.0, "mg/dL"),  # glucose
    "LOINC/8480-6": (40.0, 300.0, "mm[Hg]"),  # systolic BP
    "LOINC/8462-4": (20.0, 200.0, "mm[Hg]"),  # diastolic BP
    "LOINC/39156-5": (8.0, 150.0, "kg/m2"),  # BMI
    "LOINC/13457-7": (1.0, 1000.0, "mg/dL"),  # LDL
    "LOINC/33914-3": (1.0, 200.0, "mL/min"),  # eGFR
    "LOINC/8867-4": (15.0, 350.0, "/min"),  # heart rate
    "LOINC/29463-7": (0.3, 650.0, "kg"),  # body weight
    "LOINC/8302-2": (20.0, 280.0, "cm"),  # body height
}

REASONS = (
    "missing required field 'subject_id'",
    "subject_id is not a 64-bit integer",
    "missing required field 'code'",
    "unparseable timestamp",
    "non-numeric text in numeric_value",
    "physiologically implausible value",
    "unknown subject",
    "event before birth",
    "event after death",
    "future-dated event",
    "exact duplicate",
    "numeric_value is not a finite float32",
)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class GateResult:
    """What the gate let through, what it held back and why.

    Attributes
    ----------
    kept : DataFrame
        MEDS-typed events: ``subject_id`` (int64), ``time`` (datetime64[us], NaT = static),
        ``code`` (str), ``numeric_value`` (float32), ``text_value`` (str or None).
    quarantined : DataFrame
        The rows held back, as read (strings), with ``table``, ``row`` and ``reason``.
    summary : DataFrame
        ``table``, ``reason``, ``rows``: counts of every reason, plus ``kept`` and ``read``.
    """

    kept: pd.DataFrame
    quarantined: pd.DataFrame
    summary: pd.DataFrame


def exact_int(values: pd.Series) -> pd.Series:
    """Integers parsed exactly (never through float64, which rounds large ids): up to 18 digits,
    written ``12`` or ``12.0``; anything else becomes NA."""
    digits = values.astype("string").str.strip().str.extract(r"^([+-]?\d{1,18})(?:\.0+)?$", expand=False)
    out = pd.Series(pd.NA, index=values.index, dtype="Int64")
    if digits.notna().any():
        out[digits.notna()] = pd.to_numeric(digits[digits.notna()]).astype("int64")
    return out


class QualityGate:
    """Row-level rules applied to raw events of one source table.

    Parameters
    ----------
    reference_time : timestamp-like
        Events after it are future-dated (default: now, UTC).
    tolerance_days : float
        Slack for events before birth or after death (clock and entry noise).
    plausible_ranges : dict, optional
        ``code -> (low, high, unit)``; defaults to :data:`PLAUSIBLE_RANGES`.
    """

    def __init__(self, *, reference_time=None, tolerance_days: float = 1.0, plausible_ranges=None):
        self.reference_time = pd.Timestamp(reference_time or pd.Timestamp.now(tz="UTC").tz_localize(None))
        self.tolerance = pd.Timedelta(days=tolerance_days)
        self.plausible_ranges = PLAUSIBLE_RANGES if plausible_ranges is None else plausible_ranges

    def apply(self, raw: pd.DataFrame, *, table: str, subjects: pd.DataFrame | None = None) -> GateResult:
        """Check ``raw`` rows (columns ``subject_id``, ``time``, ``code``, optional ``numeric_value``,
        ``text_value``) from source ``table``.

        ``subjects`` (``subject_id``, ``birth``, ``death``) enables the unknown-subject and
        birth/death rules; static rows (time missing in the source) are kept with a null time.
        """
        n = len(raw)
        reason = np.full(n, None, dtype=object)

        def flag(mask, why):
            mask = np.asarray(mask, bool) & (reason == None)  # noqa: E711 - elementwise on object array
            reason[mask] = why

        sid_raw = raw["subject_id"]
        flag(sid_raw.isna() | (sid_raw.astype("string").str.strip() == ""), REASONS[0])
        sid = exact_int(sid_raw)
        flag(sid.isna().to_numpy(bool), REASONS[1])
        code = raw["code"].astype("string")
        flag(code.isna() | (code.str.strip() == ""), REASONS[2])
        time_raw = raw["time"] if "time" in raw else pd.Series([None] * n, index=raw.index)
        time = pd.to_datetime(time_raw, errors="coerce", utc=True, format="mixed").dt.tz_localize(None)
        flag(time.isna() & time_raw.notna() & (time_raw.astype("string").str.strip() != ""), REASONS[3])
        value_raw = raw["numeric_value"] if "numeric_value" in raw else pd.Series([None] * n, index=raw.index)
        value = pd.to_numeric(value_raw, errors="coerce")
        given = value_raw.notna() & (value_raw.astype("string").str.strip() != "")
        flag(given & value.isna(), REASONS[4])
        v = value.to_numpy(np.float64, na_value=np.nan)
        flag(value.notna().to_numpy() & ~(np.abs(v) <= _FLOAT32_MAX), REASONS[11])  # inf, or overflows MEDS' float32
        flag(self._implausible(code, value), REASONS[5])
        if subjects is not None:
            known = sid.isin(subjects["subject_id"])
            flag(~known, REASONS[6])
            life = subjects.set_index("subject_id")
            birth = sid.map(life["birth"]) if "birth" in life else pd.Series(pd.NaT, index=raw.index)
            death = sid.map(life["death"]) if "death" in life else pd.Series(pd.NaT, index=raw.index)
            flag(time.notna() & birth.notna() & (time < birth - self.tolerance), REASONS[7])
            flag(time.notna() & death.notna() & (time > death + self.tolerance), REASONS[8])
        flag(time.notna() & (time > self.reference_time), REASONS[9])
        text = (
            raw["text_value"].astype("string")
            if "text_value" in raw
            else pd.Series(pd.NA, index=raw.index, dtype="string")
        )
        typed = pd.DataFrame(
            {"subject_id": sid, "time": time, "code": code, "numeric_value": value, "text_value": text}
        )
        ok_so_far = pd.Series(reason == None, index=raw.index)  # noqa: E711
        dup = typed[ok_so_far].duplicated(keep="first")
        flag(ok_so_far & dup.reindex(raw.index, fill_value=False), REASONS[10])
        return self._result(raw, typed, reason, table)

    def _implausible(self, code, value):
        low = code.map({c: r[0] for c, r in self.plausible_ranges.items()}).astype("Float64")
        high = code.map({c: r[1] for c, r in self.plausible_ranges.items()}).astype("Float64")
        bad = value.notna() & low.notna() & ((value < low) | (value > high))
        return bad.fillna(False).to_numpy(bool)

    @staticmethod
    def _result(raw, typed, reason, table) -> GateResult:
        held = reason != None  # noqa: E711
        kept = typed[~held].reset_index(drop=True)
        kept = kept.assign(
            subject_id=kept["subject_id"].astype("int64"),
            time=kept["time"].astype("datetime64[us]"),
            code=kept["code"].astype(str),
            numeric_value=kept["numeric_value"].astype("float32"),
        )
        quarantined = (
            raw[held].astype("string").assign(table=table, row=np.flatnonzero(held), reason=reason[held].astype(str))
        )
        quarantined = quarantined.reset_index(drop=True)
        if len(kept) + len(quarantined) != len(raw):
            raise RuntimeError(
                f"{table}: quality gate lost rows ({len(raw)} read, {len(kept)} kept, {len(quarantined)} quarantined)"
            )
        counts = quarantined.groupby("reason").size()
        summary = pd.DataFrame(
            {
                "table": table,
                "reason": ["read", "kept", *counts.index],
                "rows": [len(raw), len(kept), *counts.to_numpy()],
            }
        )
        return GateResult(kept, quarantined, summary)
