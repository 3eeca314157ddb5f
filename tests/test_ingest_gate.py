import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinml.ingest import REASONS, QualityGate

SUBJECTS = pd.DataFrame(
    {
        "subject_id": [1, 2],
        "birth": pd.to_datetime(["1950-01-01", "1960-01-01"]),
        "death": pd.to_datetime([None, "2019-06-01"]),
    }
)
GOOD = {"subject_id": "1", "time": "2018-03-04T10:00:00", "code": "LOINC/4548-4", "numeric_value": "6.1"}


def _gate(rows):
    return QualityGate(reference_time="2026-11-22").apply(pd.DataFrame(rows), table="observations", subjects=SUBJECTS)


CASES = [
    ({"subject_id": None}, "missing required field 'subject_id'"),
    ({"subject_id": "P-17"}, "subject_id is not a 64-bit integer"),
    ({"code": " "}, "missing required field 'code'"),
    ({"time": "31/02/2018 25:61"}, "unparseable timestamp"),
    ({"numeric_value": "high"}, "non-numeric text in numeric_value"),
    ({"numeric_value": "inf"}, "numeric_value is not a finite float32"),
    ({"numeric_value": "3.4028235677973366e+38"}, "numeric_value is not a finite float32"),
    ({"code": "LOINC/8480-6", "numeric_value": "900"}, "physiologically implausible value"),
    ({"code": "LOINC/4548-4", "numeric_value": "-1"}, "physiologically implausible value"),
    ({"subject_id": "3"}, "unknown subject"),
    ({"time": "1949-12-01"}, "event before birth"),
    ({"subject_id": "2", "time": "2019-07-01"}, "event after death"),
    ({"time": "2031-01-01"}, "future-dated event"),
]
DUPLICATE = "exact duplicate"  # needs two rows: its own test below


@pytest.mark.parametrize("change, reason", CASES)
def test_each_reason_has_its_exact_message(change, reason):
    res = _gate([GOOD, {**GOOD, **change}])
    assert len(res.kept) == 1
    assert res.quarantined["reason"].tolist() == [reason]
    assert res.quarantined["row"].tolist() == [1] and res.quarantined["table"].tolist() == ["observations"]


def test_exact_duplicates_are_counted_not_kept_twice():
    res = _gate([GOOD, GOOD, {**GOOD, "numeric_value": "6.2"}])
    assert len(res.kept) == 2 and res.quarantined["reason"].tolist() == [DUPLICATE]


def test_tolerance_and_static_rows():
    res = _gate(
        [{**GOOD, "time": "1949-12-31T12:00"}, {**GOOD, "time": None, "code": "GENDER//F", "numeric_value": None}]
    )
    assert len(res.kept) == 2 and res.kept["time"].isna().sum() == 1  # within a day of birth; static kept


def test_every_reason_is_exercised_by_a_test():
    # the reasons the tests above run, not a list kept by hand: deleting a case of CASES fails this test
    assert {reason for _, reason in CASES} | {DUPLICATE} == set(REASONS)


def test_summary_counts_reasons_and_the_identity():
    res = _gate([GOOD, {**GOOD, "subject_id": None}, {**GOOD, "code": None}, GOOD])
    s = res.summary.set_index("reason")["rows"]
    assert s["read"] == 4 and s["kept"] == 1 and s["read"] == s.drop(["read"]).sum()


_junk = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", " ", "NaN", "1e400"]),
)
_time = st.one_of(_junk, st.datetimes().map(lambda d: d.isoformat()), st.sampled_from(["2018-01-01", "0001-01-01"]))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "subject_id": st.one_of(_junk, st.sampled_from(["1", "2", "1.0"])),
                "time": _time,
                "code": st.one_of(_junk, st.sampled_from(["LOINC/8480-6", "X"])),
                "numeric_value": _junk,
            }
        ),
        min_size=1,
        max_size=40,
    )
)
def test_malformed_records_never_break_the_count_identity(rows):
    res = _gate(rows)  # nothing may escape as an untyped exception
    assert len(res.kept) + len(res.quarantined) == len(rows)
    assert set(res.quarantined["reason"]) <= set(REASONS)
    assert res.kept["subject_id"].dtype == "int64" and str(res.kept["time"].dtype) == "datetime64[us]"
