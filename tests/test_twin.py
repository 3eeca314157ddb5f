"""The living twin: a saved state, advanced over new events, equals a full rescore of the whole history."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from twinml._validation import ConfigError
from twinml.models import RecordRiskModel
from twinml.models.twin import EARLIER_AS_OF, LATE_EVENT, STATIC_AGAIN
from twinml.scoring import TwinState, advance, state_risks

from .conftest import split_rows

# two layers and read-out readings: every part of the state is exercised
SMALL = dict(
    d_model=16,
    n_layers=2,
    n_last_values=4,
    max_epochs=3,
    batch_size=16,
    lr=3e-3,
    n_threads=1,
    trajectory_codes=None,
    random_state=3,
)
CUTS = ["2013-06-30", "2015-01-01", "2016-03-15", "2018-07-01", "2020-01-01"]


@pytest.fixture(scope="module")
def model(events, labels):
    return RecordRiskModel(calibration="platt", **SMALL).fit(
        events, split_rows(labels, "train"), tuning_labels=split_rows(labels, "tuning")
    )


@pytest.fixture(scope="module")
def panel(events, labels):
    """Held-out subjects' events, whole (static rows first, as in MEDS)."""
    held = split_rows(labels, "held_out")["subject_id"].drop_duplicates().iloc[:120]
    return events[events["subject_id"].isin(held)].reset_index(drop=True)


def window(events, lo, hi):
    """Events in (lo, hi]; static rows (no time) go with the first window only (lo None)."""
    t = events["time"]
    keep = (t <= pd.Timestamp(hi)) & (t > pd.Timestamp(lo)) if lo else t.isna() | (t <= pd.Timestamp(hi))
    return events[keep.to_numpy()].reset_index(drop=True)


def full_rescore(model, events, subjects, as_of):
    index = pd.DataFrame({"subject_id": subjects, "prediction_time": pd.Timestamp(as_of)})
    return model.predict_risk(events, index)


def test_state_advanced_in_five_batches_equals_a_full_rescore_at_each(model, panel):
    """Events arrive in five batches; after each, every subject's risk read from the state equals the
    model's risk from the whole history up to then, to 1e-5. One subject joins only in the third batch
    (its earlier history arrives with it); every batch leaves some subjects without new events."""
    ids = panel["subject_id"].unique()
    late_joiner = ids[5]
    state, seen = TwinState.empty(model), set()
    for k, hi in enumerate(CUTS):
        lo = CUTS[k - 1] if k else None
        batch = window(panel, lo, hi)
        if k < 2:
            batch = batch[batch["subject_id"] != late_joiner]
        elif k == 2:  # its whole history up to now arrives at once
            mine = window(panel, None, hi)
            batch = pd.concat([batch[batch["subject_id"] != late_joiner], mine[mine["subject_id"] == late_joiner]])
            batch = batch.sort_values(["subject_id", "time"], kind="stable", na_position="first").reset_index(drop=True)
        state, touched = advance(model, state, batch, hi)
        assert (touched["status"] == "").all()
        seen |= set(touched["subject_id"])
        assert set(state.subject_id) == seen and len(touched) < len(ids)
        assert (late_joiner in seen) == (k >= 2)
        upto = window(panel, None, hi)
        upto = upto[upto["subject_id"].isin(state.subject_id)].reset_index(drop=True)
        got = state_risks(model, state, hi)
        want = full_rescore(model, upto, state.subject_id, hi)
        np.testing.assert_allclose(
            got[model.label_columns_].to_numpy(),
            want[model.label_columns_].to_numpy(),
            rtol=0,
            atol=1e-5,
            err_msg=f"after batch {k + 1}",
        )
    # read later than the last batch (time since the last visit and age move on): still equal
    np.testing.assert_allclose(
        state_risks(model, state, "2021-06-01")[model.label_columns_].to_numpy(),
        full_rescore(model, window(panel, None, CUTS[-1]), state.subject_id, "2021-06-01")[
            model.label_columns_
        ].to_numpy(),
        rtol=0,
        atol=1e-5,
    )


def test_digest_and_counts_do_not_depend_on_how_the_events_were_batched(model, panel):
    once, _ = advance(model, TwinState.empty(model), window(panel, None, CUTS[-1]), CUTS[-1])
    state = TwinState.empty(model)
    for k, hi in enumerate(CUTS):
        state, _ = advance(model, state, window(panel, CUTS[k - 1] if k else None, hi), hi)
    np.testing.assert_array_equal(once.subject_id, state.subject_id)
    np.testing.assert_array_equal(once.digest, state.digest)
    np.testing.assert_array_equal(once.n_events, state.n_events)
    np.testing.assert_allclose(once.hidden, state.hidden, rtol=0, atol=1e-5)
    assert (once.n_care > 0).all() and (once.n_events > once.n_care).all()  # birth and static rows counted apart


def test_a_late_event_refuses_its_subject_and_leaves_the_rest_advancing(model, panel):
    state, _ = advance(model, TwinState.empty(model), window(panel, None, CUTS[1]), CUTS[1])
    batch = window(panel, CUTS[1], CUTS[2])
    victim = batch["subject_id"].iloc[0]
    old_row = np.flatnonzero(state.subject_id == victim)[0]
    last = pd.Timestamp(int(state.last_visit[old_row]), unit="us")
    stale = batch[batch["subject_id"] == victim].iloc[[0]].assign(time=last - pd.Timedelta(days=3))
    batch = pd.concat([stale, batch]).sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)
    new, touched = advance(model, state, batch, CUTS[2])
    status = touched.set_index("subject_id")["status"]
    assert status[victim] == LATE_EVENT and (status.drop(victim) == "").all()
    row = np.flatnonzero(new.subject_id == victim)[0]
    np.testing.assert_array_equal(new.hidden[row], state.hidden[old_row])
    assert new.as_of[row] == state.as_of[old_row] and new.digest[row] == state.digest[old_row]
    # an event at exactly the last visit's time would belong to that visit: late too
    same = batch[batch["subject_id"] == victim].iloc[[-1]].assign(time=last)
    _, touched = advance(model, state, same, CUTS[2])
    assert touched["status"].tolist() == [LATE_EVENT]
    # static rows for a subject the state holds: its traits were read with its first events
    static = panel[(panel["subject_id"] == victim) & panel["time"].isna()]
    assert len(static)
    _, touched = advance(model, state, static.reset_index(drop=True), CUTS[2])
    assert touched["status"].tolist() == [STATIC_AGAIN]
    # and a state cannot be moved back in time: an event after its last visit, read at a time before
    # the state's as-of (the state already holds that later time)
    has = np.flatnonzero(new.last_visit != np.iinfo(np.int64).min)
    r = int(has[np.argmin(new.last_visit[has])])
    after = pd.Timestamp(int(new.last_visit[r]), unit="us") + pd.Timedelta(days=1)
    event = panel[panel["subject_id"] == new.subject_id[r]].iloc[[-1]].assign(time=after)
    _, touched = advance(model, new, event, after + pd.Timedelta(days=1))
    assert touched["status"].tolist() == [EARLIER_AS_OF]


def test_a_state_of_another_architecture_or_a_non_record_model_is_refused(model, events, labels, panel, tmp_path):
    from twinml.models import TabularRiskModel

    other = RecordRiskModel(**{**SMALL, "n_last_values": 0, "max_epochs": 1}).fit(events, split_rows(labels, "train"))
    state, _ = advance(other, TwinState.empty(other), window(panel, None, CUTS[0]), CUTS[0])
    with pytest.raises(
        ConfigError,
        match=r"^twin state: field 'last_value' has shape \(0,\) float32, but this "
        r"model's state has \(4,\) float32: the state is from another model\.$",
    ):
        advance(model, state, window(panel, CUTS[0], CUTS[1]), CUTS[1])
    # a state without read-out codes (fields of width 0) goes through its files too
    from twinml.scoring import _twin as store

    identity = {"model_name": None, "model_version": None, "model_digest": "e" * 64}
    store.write_state(state, tmp_path, identity, base=True)
    back = store.read_state(tmp_path, other, identity)
    assert back.last_value.shape == (len(state), 0)
    np.testing.assert_array_equal(back.hidden, state.hidden)
    tab = TabularRiskModel(kind="logistic").fit(events, split_rows(labels, "train"))
    with pytest.raises(
        ConfigError,
        match=r"^advance: needs a whole-record model \(model.kind: record\); this "
        r"model is TabularRiskModel, which keeps no state to continue from\.$",
    ):
        advance(tab, state, panel, CUTS[0])


# --- the CLI: score --state, then update, against a full rescore -------------------------------------

T1, T2 = "2011-06-30", "2012-09-30"


def _write_events(frame, root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    table = pa.table(
        {
            "subject_id": pa.array(frame["subject_id"].to_numpy("int64")),
            "time": pa.array(frame["time"].astype("datetime64[us]")),
            "code": pa.array(frame["code"].astype(str)),
            "numeric_value": pa.array(frame["numeric_value"].astype("float32")),
        }
    )
    pq.write_table(table, root / "data" / "0.parquet")
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from twinml.config import load_config
    from twinml.data import read_meds
    from twinml.pipeline import train

    from .conftest import TASK

    root = tmp_path_factory.mktemp("twin")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config(
        {
            "name": "twin",
            "seed": 3,
            "data": {"source": "simulator", "path": str(root / "meds"), "simulator": {"n_subjects": 400, "seed": 5}},
            "task": TASK,
            "features": {"min_code_count": 1},
            "model": {
                "kind": "record",
                "params": {"d_model": 16, "max_epochs": 2, "n_last_values": 3, "trajectory_codes": None},
            },
            "evaluation": {"splits": ["held_out"], "n_bootstrap": 0},
            "tracking": {"experiment": "twin-tests", "register_as": "twin-risk"},
        }
    )
    train(cfg, tracking_uri=uri)
    events = read_meds(root / "meds")
    t = events["time"]
    _write_events(events[(t.isna() | (t <= pd.Timestamp(T1))).to_numpy()], root / "first")
    _write_events(events[((t > pd.Timestamp(T1)) & (t <= pd.Timestamp(T2))).to_numpy()], root / "new")
    return root, uri


def _part(path):
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all().to_pandas()


def _cli(*args):
    from typer.testing import CliRunner

    from twinml.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_update_equals_a_full_rescore_and_touches_only_the_subjects_with_new_events(served):
    import pyarrow.parquet as pq

    from twinml.scoring import SCORED, read_score_metadata

    root, uri = served
    model = ("--model", "models:/twin-risk/1", "--tracking-uri", uri)
    r = _cli(
        "score",
        *model,
        "--events",
        root / "first",
        "--as-of",
        T1,
        "--out",
        root / "s1.parquet",
        "--state",
        root / "state",
    )
    assert r.exit_code == 0, r.output
    base = json.loads((root / "state" / "manifest.json").read_text())["parts"]
    base_bytes = (root / "state" / base[0]["file"]).read_bytes()
    before = _part(root / "state" / base[0]["file"])
    r = _cli(
        "update",
        *model,
        "--state",
        root / "state",
        "--events",
        root / "new",
        "--as-of",
        T2,
        "--out",
        root / "u.parquet",
    )
    assert r.exit_code == 0, r.output
    r = _cli("score", *model, "--events", root / "meds", "--as-of", T2, "--out", root / "full.parquet")
    assert r.exit_code == 0, r.output
    upd = pq.read_table(root / "u.parquet").to_pandas().set_index("subject_id")
    full = pq.read_table(root / "full.parquet").to_pandas().set_index("subject_id")
    cols = [c for c in full.columns if c not in ("status", "model_version")]
    assert len(cols) == 6  # three outcomes x two horizons
    touched = pd.read_parquet(root / "new" / "data" / "0.parquet")["subject_id"].unique()
    assert set(upd.index) == set(touched) and len(upd) < len(full)  # only subjects with new events
    scored = upd[upd["status"] == SCORED]
    assert len(scored) > 100 and (full.loc[scored.index, "status"] == SCORED).all()
    np.testing.assert_allclose(scored[cols].to_numpy(), full.loc[scored.index, cols].to_numpy(), rtol=0, atol=1e-5)
    meta = read_score_metadata(root / "u.parquet")
    assert meta["advanced"] == len(upd) and meta["refused"] == 0 and meta["model_version"] == "1"
    assert meta["subjects_in_state"] == meta["subjects_touched"] + (before["subject_id"].isin(touched) == False).sum()  # noqa: E712
    # the base is left byte for byte; the update part holds exactly the advanced subjects
    parts = json.loads((root / "state" / "manifest.json").read_text())["parts"]
    assert [p["file"] for p in parts[:1]] == [base[0]["file"]] and len(parts) == 2 and not parts[1]["base"]
    assert (root / "state" / base[0]["file"]).read_bytes() == base_bytes
    delta = _part(root / "state" / parts[1]["file"])
    assert sorted(delta["subject_id"]) == sorted(touched) and len(delta) < len(before)

    # the same events again: refused as a whole (the update already committed), nothing written
    out_bytes = (root / "u.parquet").read_bytes()
    r = _cli(
        "update",
        *model,
        "--state",
        root / "state",
        "--events",
        root / "new",
        "--as-of",
        T2,
        "--out",
        root / "u.parquet",
        "--overwrite",
    )
    assert r.exit_code == 2 and "were already absorbed into the twin state" in " ".join(r.output.split()), r.output
    assert json.loads((root / "state" / "manifest.json").read_text())["parts"] == parts
    assert (root / "u.parquet").read_bytes() == out_bytes


def test_cli_update_reports_events_after_as_of_and_refuses_late_ones(served, tmp_path):
    """Read at an earlier as-of, subjects whose new events all come later are reported, not advanced;
    sending the same directory again at the later as-of refuses the subjects already advanced (their
    earlier events are now late) and advances the rest."""
    import pyarrow.parquet as pq

    from twinml.models.twin import LATE_EVENT
    from twinml.scoring._twin import NOT_YET

    root, uri = served
    model = ("--model", "models:/twin-risk/1", "--tracking-uri", uri)
    state = tmp_path / "state"
    assert (
        _cli(
            "score",
            *model,
            "--events",
            root / "first",
            "--as-of",
            T1,
            "--out",
            tmp_path / "s.parquet",
            "--state",
            state,
        ).exit_code
        == 0
    )
    mid = "2011-12-31"
    r = _cli(
        "update", *model, "--state", state, "--events", root / "new", "--as-of", mid, "--out", tmp_path / "u1.parquet"
    )
    assert r.exit_code == 0 and "after --as-of and were not absorbed" in " ".join(r.output.split()), r.output
    u1 = pq.read_table(tmp_path / "u1.parquet").to_pandas().set_index("subject_id")
    assert (u1["status"] == NOT_YET).any() and (u1["status"] == "scored").any()
    r = _cli(
        "update", *model, "--state", state, "--events", root / "new", "--as-of", T2, "--out", tmp_path / "u2.parquet"
    )
    assert r.exit_code == 0, r.output
    u2 = pq.read_table(tmp_path / "u2.parquet").to_pandas().set_index("subject_id")
    advanced_before = u1.index[u1["status"] == "scored"]
    assert (u2.loc[advanced_before, "status"] == LATE_EVENT).all()
    assert (u2.loc[u1.index[u1["status"] == NOT_YET], "status"] == "scored").all()


def test_updates_compact_through_update(served, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from twinml.scoring import _twin as store
    from twinml.scoring import update

    root, uri = served
    state = tmp_path / "state"
    assert (
        _cli(
            "score",
            "--model",
            "models:/twin-risk/1",
            "--tracking-uri",
            uri,
            "--events",
            root / "first",
            "--as-of",
            T1,
            "--out",
            tmp_path / "s.parquet",
            "--state",
            state,
        ).exit_code
        == 0
    )
    n_base = store.read_state_metadata(state)["subjects"]
    monkeypatch.setattr(store, "COMPACT_AFTER", 0)
    report = update("models:/twin-risk/1", state, root / "new", T2, tmp_path / "u.parquet", tracking_uri=uri)
    manifest = store.read_state_metadata(state)
    assert [p["base"] for p in manifest["parts"]] == [True] and len(list(state.glob("part-*.arrow"))) == 1
    assert manifest["subjects"] == report.subjects_in_state == n_base + report.new_subjects
    assert manifest["parts"][0]["rows"] == manifest["subjects"]
    assert (pq.read_table(tmp_path / "u.parquet").to_pandas()["status"] == "scored").sum() > 100


def test_cli_update_names_bad_input_and_writes_nothing(served, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, uri = served
    model = ("--model", "models:/twin-risk/1", "--tracking-uri", uri)
    state = tmp_path / "state"
    assert (
        _cli(
            "score",
            *model,
            "--events",
            root / "first",
            "--as-of",
            T1,
            "--out",
            tmp_path / "s.parquet",
            "--state",
            state,
        ).exit_code
        == 0
    )
    before = {f.name: f.read_bytes() for f in state.iterdir()}
    new = pd.read_parquet(root / "new" / "data" / "0.parquet")
    unsorted = _write_events(new.iloc[::-1], tmp_path / "unsorted")
    bad_dtype = tmp_path / "bad_dtype" / "data"
    bad_dtype.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "subject_id": new["subject_id"],
                "time": new["time"].astype(str),
                "code": new["code"].astype(str),
                "numeric_value": new["numeric_value"],
            }
        ),
        bad_dtype / "0.parquet",
    )
    cases = [
        (
            unsorted,
            rf"^error: {tmp_path}/unsorted/data/0.parquet: column 'time' must not decrease within a "
            r"subject \(example: subject_id=\d+\)\. Sort by subject_id, then time\.$",
        ),
        (
            tmp_path / "bad_dtype",
            rf"^error: {bad_dtype}/0.parquet: column 'time' must be a timestamp \(MEDS\); "
            r"got (large_)?string\.$",
        ),
    ]
    for events_dir, message in cases:
        r = _cli(
            "update", *model, "--state", state, "--events", events_dir, "--as-of", T2, "--out", tmp_path / "u.parquet"
        )
        assert r.exit_code == 2, r.output
        assert re.match(message, " ".join(r.output.split())), r.output
        assert not (tmp_path / "u.parquet").exists() and {f.name: f.read_bytes() for f in state.iterdir()} == before
    r = _cli(
        "update",
        *model,
        "--state",
        tmp_path / "nowhere",
        "--events",
        root / "new",
        "--as-of",
        T2,
        "--out",
        tmp_path / "u.parquet",
    )
    assert r.exit_code == 2 and "no twin state here" in r.output, r.output


def test_a_state_from_another_model_version_is_refused(model, panel, tmp_path):
    from twinml.models.twin import model_digest
    from twinml.scoring import _twin as store

    state, _ = advance(model, TwinState.empty(model), window(panel, None, CUTS[0]), CUTS[0])
    store.write_state(
        state,
        tmp_path,
        {"model_name": "twin-risk", "model_version": "1", "model_digest": model_digest(model)},
        base=True,
    )
    identity = {"model_name": "twin-risk", "model_version": "2", "model_digest": "0" * 64}
    with pytest.raises(
        ConfigError,
        match=r"manifest.json: this twin state was made by twin-risk version 1 "
        r"\(parameters [0-9a-f]{12}\), not by twin-risk version 2 \(parameters "
        r"000000000000\); a state is only advanced by the model that made it",
    ):
        store.read_state(tmp_path, model, identity)


def test_updates_compact_into_a_new_base_and_the_merged_state_is_the_same(served, model, panel, tmp_path, monkeypatch):
    """Update parts accumulate until COMPACT_AFTER; the next update writes one base of every subject's
    latest row. Reading the parts merged gives the same state either way, and a failed write
    (here: the scores cannot be written) leaves the old manifest and no stray part."""
    from twinml.scoring import _twin as store

    identity = {"model_name": None, "model_version": None, "model_digest": "d" * 64}
    state, _ = advance(model, TwinState.empty(model), window(panel, None, CUTS[0]), CUTS[0])
    store.write_state(state, tmp_path, identity, base=True)
    for k in (1, 2):
        held = state.subject_id
        state, touched = advance(model, state, window(panel, CUTS[k - 1], CUTS[k]), CUTS[k])
        adv = np.sort(touched["subject_id"].to_numpy(np.int64))
        store.write_state(
            state.take(np.searchsorted(state.subject_id, adv)),
            tmp_path,
            identity,
            base=False,
            new_subjects=int((~np.isin(adv, held)).sum()),
        )
    manifest = store.read_state_metadata(tmp_path)
    assert [p["base"] for p in manifest["parts"]] == [True, False, False] and manifest["subjects"] == len(state)
    merged = store.read_state(tmp_path, model, identity)
    for f in ("subject_id", "hidden", "last_visit", "digest", "traits", "last_value_time"):
        np.testing.assert_array_equal(getattr(merged, f), getattr(state, f))
    # reading only some subjects' rows (as an update does) gives their latest rows; unknown ids are skipped
    some = np.r_[state.subject_id[::7], -5]
    part = store.read_state(tmp_path, model, identity, subjects=some)
    np.testing.assert_array_equal(part.subject_id, state.subject_id[::7])
    np.testing.assert_array_equal(part.hidden, state.hidden[::7])
    monkeypatch.setattr(store, "COMPACT_AFTER", 2)
    assert store.needs_compaction(manifest)
    store.write_state(merged, tmp_path, identity, base=True)
    assert len(list(tmp_path.glob("part-*.arrow"))) == 1
    np.testing.assert_array_equal(store.read_state(tmp_path, model, identity).hidden, state.hidden)

    def fail():
        raise OSError("disk full")

    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    with pytest.raises(OSError, match="disk full"):
        store.write_state(merged, tmp_path, identity, base=False, then=fail)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before


def test_on_synthea_records_the_state_in_five_batches_equals_a_full_rescore(model, tmp_path):
    """The Done-means' small Synthea slice: the bundled FHIR sample (three Synthea patients, decades
    of visits, many events at one time, codes the simulator-trained model mostly does not know, labs
    it does) fed in five batches by time; the state's risks equal a full rescore at each, to 1e-5."""
    from pathlib import Path

    from twinml.data import read_meds
    from twinml.ingest import ingest

    sample = Path(__file__).resolve().parents[1] / "data" / "samples" / "fhir"
    ingest("fhir", sample, tmp_path / "meds", reference_time="2025-01-02")
    ev = read_meds(tmp_path / "meds")
    assert ev["subject_id"].nunique() == 3 and len(ev) > 1000
    cuts = ["1990-01-01", "2005-01-01", "2015-01-01", "2020-06-30", "2025-01-02"]
    state = TwinState.empty(model)
    for k, hi in enumerate(cuts):
        batch = window(ev, cuts[k - 1] if k else None, hi)
        state, touched = advance(model, state, batch, hi)
        assert (touched["status"] == "").all()
        upto = window(ev, None, hi)
        upto = upto[upto["subject_id"].isin(state.subject_id)].reset_index(drop=True)
        np.testing.assert_allclose(
            state_risks(model, state, hi)[model.label_columns_].to_numpy(),
            full_rescore(model, upto, state.subject_id, hi)[model.label_columns_].to_numpy(),
            rtol=0,
            atol=1e-5,
            err_msg=f"after batch {k + 1}",
        )
    assert len(state) == 3
