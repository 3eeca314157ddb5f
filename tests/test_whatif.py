"""The what-if twin: factual plans, overlap flags, bands under no effect, the CLI."""

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twinml._validation import ConfigError
from twinml.cli import app
from twinml.cohort import TaskDefinition, build_labels, factual_plans, load_plans
from twinml.models import SequenceRiskModel
from twinml.simulate import simulate
from twinml.whatif import NOT_TRAINED, TreatmentResponseModel, plan_curves_figure, what_if

PLANS = "configs/plans.yaml"
ENCODER = {"d_model": 16, "max_epochs": 3, "batch_size": 256, "n_threads": 2, "random_state": 0}
SMALL = {"encoder": SequenceRiskModel(**ENCODER), "n_boot": 10}
TASK = TaskDefinition(
    name="whatif",
    outcomes={"t2d": {"codes": ["SNOMED/44054006"]}, "mi": {"codes": ["SNOMED/22298006"]}},
    horizons_days=[365, 730],
    prediction_times={"start": "2012-01-01"},
)


def _events(rows):
    ev = pd.DataFrame(rows, columns=["subject_id", "time", "code"])
    ev["time"] = pd.to_datetime(ev["time"]).astype("datetime64[us]")
    ev["code"] = ev["code"].astype("category")
    ev["numeric_value"] = np.float32(np.nan)
    return ev.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)


def test_factual_plan_reads_starts_inside_the_decision_window_only():
    statin, metformin = "RxNorm/83367", "RxNorm/6809"
    ev = _events(
        [
            (1, "2010-01-01", "V"),
            (1, "2012-01-31", statin),  # starts statin on day 30 (window: 30 days)
            (2, "2010-01-01", "V"),
            (2, "2012-06-01", statin),  # day 152: after the window
            (3, "2010-01-01", "V"),
            (3, "2012-01-10", statin),
            (3, "2012-01-20", metformin),  # two starts: no plan
            (4, "2010-01-01", statin),
            (4, "2012-01-31", statin),  # already on statin
            (5, "2010-01-01", "V"),
            (5, "2012-01-01", statin),  # at t: before, not a start
        ]
    )
    index = pd.DataFrame({"subject_id": [1, 2, 3, 4, 5], "prediction_time": pd.Timestamp("2012-01-01").as_unit("us")})
    fp = factual_plans(ev, index, load_plans(PLANS))
    assert fp["plan"].fillna("<none>").tolist() == [
        "start_statin",
        "no_new_treatment",
        "<none>",
        "no_new_treatment",
        "no_new_treatment",
    ]
    assert fp["already_on/start_statin"].tolist() == [False, False, False, True, True]
    assert not fp["already_on/no_new_treatment"].any()


def test_yearly_reviews_make_the_records_decisions_the_ground_truth_plans():
    sim = simulate(n_subjects=1500, seed=4, treatment_decisions="yearly_review")
    ev = sim.events.to_pandas()
    ev["code"] = ev["code"].astype("category")
    # every treatment start is a review's prescription: a whole number of 365-day years after start, plus a minute
    rx = ev[ev["code"].astype(str).str.startswith("RxNorm/")]
    first = rx.groupby(["subject_id", "code"], observed=True)["time"].min()
    offset = (first - pd.Timestamp("2010-01-01")).dt.total_seconds()
    assert len(first) > 100 and ((offset - 60) % (365 * 86400) == 0).all()
    # so the risk under the observed policy is the risk under each row's factual plan, to the float
    labels = build_labels(ev, task=TASK, subject_splits=sim.subject_splits).labels
    fp = factual_plans(ev, labels, load_plans(PLANS))
    rows = labels.assign(plan=fp["plan"]).dropna(subset=["plan"])[["subject_id", "prediction_time", "plan"]]
    truth = sim.truth.assign(plan=sim.truth["plan"].astype(str))
    observed = truth[truth["plan"] == "observed"].drop(columns="plan")
    got = rows.merge(truth, on=["subject_id", "prediction_time", "plan"]).merge(
        observed, on=["subject_id", "prediction_time"], suffixes=("", "_observed")
    )
    assert len(got) == len(rows) and (got["plan"] != "no_new_treatment").sum() > 100
    for col in ("t2d_365d", "mi_365d", "stroke_365d"):
        np.testing.assert_allclose(got[col], got[f"{col}_observed"], rtol=1e-6)


def test_plans_file_errors_name_the_rule():
    from twinml._validation import ConfigError

    with pytest.raises(ConfigError, match="reference plan 'none' must start nothing"):
        load_plans({"reference": "none", "plans": {"none": {"codes": ["X"]}}})
    with pytest.raises(ConfigError, match="start the same codes at the same time"):
        load_plans({"plans": {"no_new_treatment": {}, "a": {"codes": ["X"]}, "b": {"codes": ["X"]}}})
    with pytest.raises(ConfigError, match="reference 'no_new_treatment' is not one of the plans"):
        load_plans({"plans": {"a": {"codes": ["X"]}}})


@pytest.fixture(scope="module")
def no_effect():
    """A cohort where treatments do nothing (prescribing still confounded), and a model fitted on it."""
    sim = simulate(n_subjects=4000, seed=5, treatment_effect_scale=0.0)
    ev = sim.events.to_pandas()
    ev["code"] = ev["code"].astype("category")
    labels = build_labels(ev, task=TASK, subject_splits=sim.subject_splits).labels
    part = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "tuning", "held_out")}
    plans = load_plans(PLANS).model_dump()
    plans["plans"]["start_insulin"] = {"codes": ["RxNorm/NOBODY"], "description": "a drug nobody received"}
    model = TreatmentResponseModel(plans=plans, **SMALL).fit(ev, part["train"], tuning_labels=part["tuning"])
    return ev, part, model, sim


@pytest.mark.slow  # the no-effect cohort's fit is 25 s: make test stays under 5 minutes; CI runs it
def test_without_a_treatment_effect_bands_contain_zero(no_effect):
    ev, part, model, sim = no_effect
    pred = model.predict_plans(ev, part["held_out"])
    contain, n = 0, 0
    for j in range(1, len(pred.plans)):
        ok = pred.in_support[:, j]
        lo, hi = pred.effect_lo[ok, j], pred.effect_hi[ok, j]
        contain += int(((lo <= 0) & (hi >= 0)).sum())
        n += lo.size
    assert n > 1000
    assert contain / n >= 0.8, f"only {contain / n:.0%} of in-support bands contain zero"
    # the truth agrees: every plan's true risk equals the reference's
    truth = sim.truth.pivot_table(
        index=["subject_id", "prediction_time"], columns="plan", values="mi_365d", observed=True
    )
    assert np.allclose(truth["start_statin"], truth["no_new_treatment"], equal_nan=True)


@pytest.mark.slow  # the no-effect cohort's fit is 25 s: make test stays under 5 minutes; CI runs it
def test_a_plan_nobody_received_is_outside_support_for_everyone(no_effect):
    ev, part, model, _ = no_effect
    assert model.plan_counts_["start_insulin"] == 0
    pred = model.predict_plans(ev, part["held_out"])
    j = pred.plans.index("start_insulin")
    assert not pred.in_support[:, j].any()
    assert np.isnan(pred.effect[:, j]).all() and np.isnan(pred.risk[:, j]).all()
    assert set(pred.reason[:, j]) == {"fewer than 20 training patients received it"}
    # received plans stay estimable for most patients, never for those already on the drug
    k = pred.plans.index("start_statin")
    assert 0.3 < pred.in_support[:, k].mean() < 1.0
    on = factual_plans(ev, part["held_out"], model.plans_)["already_on/start_statin"].to_numpy()
    assert not pred.in_support[on, k].any()
    # a plan the model never saw (asked at prediction time) is outside support too
    asked = model.plans_.model_dump()
    asked["plans"]["start_aspirin"] = {"codes": ["RxNorm/1191"]}
    res = what_if(model, ev, part["held_out"].head(20), load_plans(asked))
    a = res.prediction.plans.index("start_aspirin")
    assert not res.prediction.in_support[:, a].any() and set(res.prediction.reason[:, a]) == {NOT_TRAINED}


@pytest.mark.slow  # the no-effect cohort's fit is 25 s: make test stays under 5 minutes; CI runs it
def test_effect_bands_and_curves_are_well_formed(no_effect):
    ev, part, model, _ = no_effect
    pred = model.predict_plans(ev, part["held_out"].head(300))
    ok = np.isfinite(pred.risk)
    assert (np.diff(pred.risk, axis=-1)[np.isfinite(np.diff(pred.risk, axis=-1))] >= 0).all()  # monotone
    assert (pred.risk_lo[ok] <= pred.risk[ok]).all() and (pred.risk[ok] <= pred.risk_hi[ok]).all()
    ref = pred.in_support[:, 0]  # the reference against itself: zero, or not estimable when it is outside support
    assert (pred.effect[ref, 0] == 0).all() and np.isnan(pred.effect[~ref, 0]).all()
    obs = model.predict_risk_curve(ev, part["held_out"].head(300))
    assert (obs > 0).all() and (obs < 1).all()


@pytest.mark.slow  # the no-effect cohort's fit is 25 s: make test stays under 5 minutes; CI runs it
def test_the_plan_curves_of_a_patient_with_no_plan_in_support_say_so(no_effect):
    ev, part, model, _ = no_effect
    res = what_if(model, ev, part["held_out"].head(50))
    row = int(np.argmax(res.prediction.in_support.any(axis=1)))
    assert res.prediction.in_support[row].any()
    none = replace(res, prediction=replace(res.prediction, in_support=np.zeros_like(res.prediction.in_support)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns of a legend with no entries
        fig = plan_curves_figure(none, row)
    said = "no plan is in the support of the training data for this patient"
    assert said in [t.get_text() for t in fig.texts]
    assert not any(ax.lines for ax in fig.axes)
    shown = plan_curves_figure(res, row)
    assert said not in [t.get_text() for t in shown.texts] and shown.axes[0].get_legend() is not None


def test_whatif_kind_needs_plans_in_the_task():
    from twinml._validation import ConfigError
    from twinml.config import load_config
    from twinml.pipeline import build_model

    from .conftest import TASK as BASE_TASK

    cfg = load_config({"name": "wi", "data": {"path": "x"}, "task": BASE_TASK, "model": {"kind": "whatif"}})
    with pytest.raises(ConfigError, match="needs task.treatment"):
        build_model(cfg)
    with pytest.raises(ConfigError, match="plans file 'nope.yaml' not found"):
        load_config({"name": "wi", "data": {"path": "x"}, "task": {**BASE_TASK, "treatment": "nope.yaml"}})


def test_seeded_fit_is_reproducible():
    sim = simulate(n_subjects=800, seed=2)
    ev = sim.events.to_pandas()
    ev["code"] = ev["code"].astype("category")
    labels = build_labels(ev, task=TASK, subject_splits=sim.subject_splits).labels
    train, held = labels[labels["split"] == "train"], labels[labels["split"] == "held_out"]
    params = {**SMALL, "encoder": SequenceRiskModel(**{**ENCODER, "max_epochs": 2}), "n_encoders": 1}
    model = TreatmentResponseModel(plans=PLANS, **params).fit(ev, train)
    a = model.predict_plans(ev, held)
    b = TreatmentResponseModel(plans=PLANS, **params).fit(ev, train).predict_plans(ev, held)
    np.testing.assert_array_equal(a.effect, b.effect)
    np.testing.assert_array_equal(a.propensity, b.propensity)
    # both models shared one encoder template: changing it later leaves the fitted models as they were
    params["encoder"].set_params(d_model=3)
    assert model.d_model == ENCODER["d_model"] and model.get_params()["encoder__d_model"] == 3
    np.testing.assert_array_equal(model.predict_plans(ev, held).effect, a.effect)


def test_an_ensemble_of_encoders_pools_every_encoders_heads_in_the_band():
    """n_encoders=2: two encoders from different starts, each with its own bootstrap heads; the band is
    the spread over all 2 x n_boot heads, so it holds the encoders' disagreement too."""
    import torch

    from twinml.models._hazard import risk_curve

    sim = simulate(n_subjects=800, seed=2)
    ev = sim.events.to_pandas()
    ev["code"] = ev["code"].astype("category")
    labels = build_labels(ev, task=TASK, subject_splits=sim.subject_splits).labels
    train, held = labels[labels["split"] == "train"], labels[labels["split"] == "held_out"]
    k = SMALL["n_boot"]
    m = TreatmentResponseModel(plans=PLANS, n_encoders=2, n_boot=SMALL["n_boot"])
    m.set_params(**{f"encoder__{name}": v for name, v in {**ENCODER, "max_epochs": 1}.items()}).fit(ev, train)
    assert len(m.nets_) == len(m.heads_) == 2
    data = m.featurizer_.transform(ev, held)
    pooled, prop = m._plan_risks(data)
    assert pooled.shape[1] == 2 * k
    members = []
    for net, heads in zip(m.nets_, m.heads_):
        rep, _ = m._outputs(data, net=net)
        members.append(risk_curve(torch.from_numpy(m._plan_logits(rep, heads))).numpy())
    np.testing.assert_allclose(pooled[:, :k], members[0], rtol=1e-6)
    np.testing.assert_allclose(pooled[:, k:], members[1], rtol=1e-6)
    assert not np.allclose(members[0].mean(1), members[1].mean(1))  # two different encoders
    pred = m.predict_plans(ev, held)
    effect = pooled - pooled[:, :, :1]
    ok = pred.in_support[:, :, None, None] & np.ones_like(pred.effect, bool)
    np.testing.assert_allclose(pred.effect[ok], effect.mean(1)[ok], rtol=1e-5, atol=1e-9)
    half = 1.6448536 * effect.std(1, ddof=1)
    np.testing.assert_allclose((pred.effect_hi - pred.effect)[ok], half[ok], rtol=1e-4, atol=1e-9)
    with pytest.raises(Exception, match="'n_encoders' parameter of TreatmentResponseModel must be a positive int"):
        TreatmentResponseModel(plans=PLANS, n_encoders=0).fit(ev, train)


def test_whatif_cli_prints_plans_and_writes_plots(tmp_path):
    from twinml.config import load_config
    from twinml.pipeline import train

    from .conftest import TASK as BASE_TASK

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(
        {
            "name": "wi",
            "data": {"path": str(tmp_path / "meds"), "simulator": {"n_subjects": 1500}},
            "task": {**BASE_TASK, "treatment": PLANS},
            "model": {
                "kind": "whatif",
                "params": {"encoder": {"d_model": 8, "max_epochs": 1, "n_threads": 1}, "n_boot": 4, "n_encoders": 1},
            },
            "evaluation": {"n_bootstrap": 10},
            "tracking": {"uri": uri, "experiment": "whatif-tests", "register_as": "twin"},
        }
    )
    res = train(cfg)
    ids = res.cohort.labels.query("split == 'held_out'")["subject_id"].unique()[:2]
    runner = CliRunner()
    out = tmp_path / "wi"
    r = runner.invoke(
        app,
        [
            "whatif",
            "--model",
            "models:/twin/1",
            "--events",
            str(tmp_path / "meds"),
            "--subjects",
            ",".join(map(str, ids)),
            "--at",
            "2016-01-01",
            "--out",
            str(out),
            "--html",
            "--tracking-uri",
            uri,
        ],
        env={"COLUMNS": "160"},
    )
    assert r.exit_code == 0, r.output
    assert "Start atorvastatin now" in r.output and f"subject {ids[0]}" in r.output and "%" in r.output
    table = pd.read_csv(out / "whatif.csv")
    assert set(table["plan"]) == set(load_plans(PLANS).names) and set(table["subject_id"]) == set(ids)
    assert len(list(out.glob("curves_*.png"))) == 2
    assert "data:image/png;base64," in (out / "report.html").read_text()
    # its twin page: risk under each plan with support flags; no drivers, saying why
    page = tmp_path / "twin"
    r = runner.invoke(
        app,
        [
            "twin",
            "--model",
            "models:/twin/1",
            "--events",
            str(tmp_path / "meds"),
            "--subject",
            str(ids[0]),
            "--at",
            "2016-01-01",
            "--out",
            str(page),
            "--tracking-uri",
            uri,
        ],
    )
    assert r.exit_code == 0, r.output
    text = (page / "twin.html").read_text()
    assert "Start atorvastatin now" in text and "in support" in text and "reads risk networks" in text
    plans_at = pd.read_csv(page / "whatif.csv")
    assert set(plans_at["plan"]) == set(load_plans(PLANS).names) and set(plans_at["subject_id"]) == {ids[0]}
    assert not (page / "drivers.csv").exists()
    # the audit covers risk models: a what-if model gets one clear line, exit code 2
    refused = runner.invoke(
        app,
        [
            "audit",
            "--model",
            "models:/twin/1",
            "--events",
            str(tmp_path / "meds"),
            "--out",
            str(tmp_path / "audit"),
            "--tracking-uri",
            uri,
        ],
    )
    assert refused.exit_code == 2 and "what-if (treatment-response) model" in refused.output
    assert not (tmp_path / "audit").exists()
    # bad subject ids: one clear line, exit code 2
    bad = runner.invoke(
        app,
        [
            "whatif",
            "--model",
            "models:/twin/1",
            "--events",
            str(tmp_path / "meds"),
            "--subjects",
            "nope",
            "--tracking-uri",
            uri,
        ],
    )
    assert bad.exit_code == 2 and "comma-separated integer subject ids" in bad.output


def test_a_model_pickled_before_the_whatif_package_loads():
    # pickles written before twinml.whatif name the class at twinml.models._treatment and keep the
    # encoder's settings flat (d_model=8 beside n_boot); they load with the settings nested
    import pickle

    flat = {
        k.removeprefix("encoder__"): v
        for k, v in TreatmentResponseModel(plans=PLANS, encoder=SequenceRiskModel(d_model=8)).get_params().items()
        if k != "encoder"
    }
    old_model = TreatmentResponseModel.__new__(TreatmentResponseModel)
    old_model.__dict__.update({**flat, "trajectory_codes": None})
    data = pickle.dumps(old_model, protocol=2)
    old = data.replace(b"twinml.whatif._model", b"twinml.models._treatment")
    assert old != data and "encoder" not in vars(old_model)
    loaded = pickle.loads(old)
    assert type(loaded) is TreatmentResponseModel and type(loaded.encoder) is SequenceRiskModel
    assert loaded.get_params()["encoder__d_model"] == 8 and loaded.d_model == 8 and "d_model" not in vars(loaded)


def test_encoder_settings_are_nested_as_in_scikit_learn():
    from sklearn.base import clone

    m = TreatmentResponseModel(plans=PLANS)
    assert m.encoder is None and m.d_model == SequenceRiskModel().d_model  # None: the sequence model's defaults
    m.set_params(encoder__d_model=8, encoder__max_epochs=2, n_boot=5)
    assert type(m.encoder) is SequenceRiskModel and (m.d_model, m.max_epochs, m.n_boot) == (8, 2, 5)
    params = m.get_params(deep=True)
    assert params["encoder__d_model"] == 8 and "d_model" not in params
    twin = clone(m)
    assert twin.encoder is not m.encoder and twin.get_params()["encoder__d_model"] == 8
    with pytest.raises(AttributeError):
        m.d_model = 16  # one place for each setting: the encoder


def test_a_config_nests_the_encoder_settings_and_says_where_a_flat_one_goes():
    from twinml.config import load_config
    from twinml.pipeline import build_model

    from .conftest import TASK as BASE_TASK

    def config(params):
        raw = {
            "name": "wi",
            "seed": 3,
            "data": {"path": "unused", "simulator": {"n_subjects": 100}},
            "task": {**BASE_TASK, "treatment": PLANS},
            "model": {"kind": "whatif", "params": params},
        }
        return load_config(raw)

    m = build_model(config({"encoder": {"d_model": 8}, "encoder__max_epochs": 2, "n_boot": 5}))
    assert (m.d_model, m.max_epochs, m.n_boot, m.random_state) == (8, 2, 5, 3)  # the seed reaches the encoder
    with pytest.raises(ConfigError) as err:
        build_model(config({"d_model": 8}))
    assert str(err.value) == (
        "model.params: 'd_model' is a setting of the what-if model's encoder; write it as "
        "encoder: {d_model: 8} (or encoder__d_model: 8)."
    )
    with pytest.raises(ConfigError, match="model.params: Invalid parameter 'depth' for estimator SequenceRiskModel"):
        build_model(config({"encoder__depth": 3}))
    with pytest.raises(ConfigError) as err:
        build_model(config({"encoder": {"depth": 3}}))
    assert str(err.value) == "model.params: SequenceRiskModel got an unexpected keyword argument 'depth'"
    with pytest.raises(ConfigError, match="'encoder' parameter of TreatmentResponseModel must be None or a Seq"):
        TreatmentResponseModel(plans=PLANS, encoder=SequenceRiskModel(calibration="platt"))._validate_params()
    with pytest.raises(ConfigError) as err:
        TreatmentResponseModel(plans=PLANS).set_params(encoder__max_epochs=0)._validate_params()
    assert str(err.value) == (
        "The 'encoder__max_epochs' parameter of TreatmentResponseModel must be a positive int. Got 0 instead."
    )
    assert TreatmentResponseModel(plans=PLANS).set_params(encoder=None, encoder__d_model=3).d_model == 3
