"""The blend of the whole-record GRU and LightGBM: one estimator, monotone calibrated curves."""

import numpy as np
import pandas as pd
import pytest
import torch

from twinml.models import BlendRiskModel
from twinml.models._blend import WEIGHT_GRID, hazard_logits_of_risks, tuning_losses
from twinml.models._hazard import HazardCalibrator, hazard_targets, risk_curve

from .conftest import split_rows

RECORD = dict(d_model=16, max_epochs=3, batch_size=16, lr=3e-3, n_threads=1, trajectory_codes=None)
TABULAR = dict(model_params={"n_estimators": 60, "n_jobs": 1})


@pytest.fixture(scope="module")
def fitted(events, labels):
    return BlendRiskModel(record_weight="auto", record_params=RECORD, tabular_params=TABULAR, random_state=3).fit(
        events, split_rows(labels, "train"), tuning_labels=split_rows(labels, "tuning")
    )


def test_tabular_risks_become_hazards_whose_curve_is_their_running_maximum():
    r = np.array([[[0.1, 0.3, 0.25, 0.6]], [[0.0, 0.0, 0.5, 0.5]]])
    back = risk_curve(torch.from_numpy(hazard_logits_of_risks(r)).double()).numpy()
    np.testing.assert_allclose(back, np.clip(np.maximum.accumulate(r, axis=-1), 1e-6, None), atol=1e-5)


def test_blend_averages_the_members_log_odds_then_calibrates_and_stays_monotone(events, labels, fitted):
    from twinml.evaluation import evaluate_risks

    held = split_rows(labels, "held_out")
    z = fitted.member_logits(events, held)
    members = fitted.records_
    assert [m.random_state for m in members] == [3, 4, 5] and fitted.record_ is members[0]
    zr = [m._logits(m.featurizer_.transform(events, held)) for m in members]
    assert not np.allclose(zr[0], zr[1], atol=1e-3)  # differently seeded GRUs
    np.testing.assert_allclose(z[..., 0], np.mean(zr, axis=0), atol=1e-6)  # the record side: the GRUs' mean
    raw = fitted.predict_risk_curve(events, held, calibrated=False)
    w = fitted.blend_weight()
    np.testing.assert_allclose(
        raw, risk_curve(torch.from_numpy(w * z[..., 0] + (1 - w) * z[..., 1])).numpy(), atol=1e-5
    )
    at = fitted.predict_risk_at_weights(events, held, [w, 0.0])
    pd.testing.assert_frame_equal(at[w], fitted.predict_risk(events, held, calibrated=False))
    one = fitted.tabular_.predict_risk(events, held, calibrated=False)
    np.testing.assert_allclose(at[0.0]["t2d_365d"], one["t2d_365d"], atol=1e-5)  # weight 0: LightGBM's own risks
    curve = fitted.predict_risk_curve(events, held)
    assert not np.allclose(curve, raw)  # the calibrator was fitted and applied
    assert (np.diff(curve, axis=-1) >= 0).all() and ((curve > 0) & (curve < 1)).all()
    risks = fitted.predict_risk(events, held)
    metrics = evaluate_risks(held, risks, columns=fitted.label_columns_, n_boot=0).set_index("label")
    assert metrics.loc["t2d_730d", "auroc"] > 0.6


def test_auto_weight_is_the_grid_weight_of_least_calibrated_tuning_loss(events, labels, fitted):
    tuning = split_rows(labels, "tuning")
    losses = tuning_losses(
        fitted.member_logits(events, tuning), hazard_targets(tuning, fitted.outcomes_, fitted.horizons_)
    )
    assert list(losses) == list(WEIGHT_GRID) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert fitted.tuning_losses_ == pytest.approx(losses, rel=1e-6)
    assert fitted.record_weight_ == fitted.blend_weight() == min(losses, key=losses.get)
    assert fitted.get_params()["record_weight"] == "auto" == BlendRiskModel().record_weight  # the default
    from twinml.audit._audit import _params  # the audit report and model card show the weight chosen

    assert _params(fitted)["record_weight"] == f"auto ({fitted.blend_weight():g})"


def test_a_fixed_weight_is_kept_and_the_calibrator_fitted_at_it(events, labels):
    tuning = split_rows(labels, "tuning")
    tiny = dict(RECORD, max_epochs=1, d_model=8)
    model = BlendRiskModel(record_weight=0.4, n_record_members=1, record_params=tiny, tabular_params=TABULAR)
    model.fit(events, split_rows(labels, "train"), tuning_labels=tuning)
    assert model.record_weight_ == model.blend_weight() == 0.4 and model.tuning_losses_ is None
    z = model.member_logits(events, tuning)
    y = hazard_targets(tuning, model.outcomes_, model.horizons_)
    again = HazardCalibrator("platt").fit(0.4 * z[..., 0] + 0.6 * z[..., 1], y)
    np.testing.assert_allclose(model.calibrator_.scale, again.scale, rtol=1e-4)
    np.testing.assert_allclose(model.calibrator_.shift, again.shift, rtol=1e-4, atol=1e-5)


def test_tuning_loss_prefers_the_informative_member():
    rng = np.random.default_rng(0)
    risk = rng.uniform(-4, 0, size=(4000, 1, 2))
    y = (rng.uniform(size=risk.shape) < 1 / (1 + np.exp(-risk))).astype(np.float32)
    y[:, :, 1] = np.where(y[:, :, 0] == 1, np.nan, y[:, :, 1])  # no bin after an event
    informative, noise = risk + rng.normal(0, 0.3, risk.shape), rng.normal(-2, 1, risk.shape)
    record_good = tuning_losses(np.stack([informative, noise], -1).astype(np.float32), y)
    tabular_good = tuning_losses(np.stack([noise, informative], -1).astype(np.float32), y)
    assert min(record_good, key=record_good.get) == 0.9 and min(tabular_good, key=tabular_good.get) == 0.1
    assert record_good[0.9] < record_good[0.5] < record_good[0.1]


def test_weight_one_is_the_record_member_alone(events, labels, fitted):
    held = split_rows(labels, "held_out").iloc[:50]
    alone = BlendRiskModel(record_weight=1.0, calibration=None)
    alone.__dict__.update(
        {k: v for k, v in fitted.__dict__.items() if k.endswith("_") and k not in ("calibrator_", "record_weight_")},
        calibrator_=None,
    )  # without record_weight_, as pickled before "auto": the weight is record_weight
    zr = np.mean([m._logits(m.featurizer_.transform(events, held)) for m in fitted.records_], axis=0)
    np.testing.assert_allclose(
        alone.predict_risk_curve(events, held), risk_curve(torch.from_numpy(zr)).numpy(), atol=1e-6
    )
    # a blend pickled before n_record_members has one GRU, as record_
    del alone.__dict__["records_"], alone.__dict__["n_record_members"]
    assert alone.get_params()["n_record_members"] == 1
    np.testing.assert_allclose(
        alone.predict_risk_curve(events, held),
        fitted.record_.predict_risk_curve(events, held, calibrated=False),
        atol=1e-6,
    )


def test_explanations_weigh_each_member_as_the_blend_does(events, labels, fitted):
    from twinml.evaluation import explain_model

    held = split_rows(labels, "held_out").iloc[:6]
    attr = explain_model(fitted, events, held, label="t2d_365d", n_samples=16)
    w = fitted.blend_weight()
    assert set(attr.table["member"]) == {"record", "tabular"} and attr.method.startswith(f"blend of {w:g} x")
    assert "the mean of 3 GRUs" in attr.method
    alone = explain_model(fitted.tabular_, events, held, label="t2d_365d")
    assert fitted.tabular_.n_shares() == 1  # the blend's LightGBM is one model per label (as measured)
    tab = attr.table[attr.table["member"] == "tabular"]
    np.testing.assert_allclose(tab["attribution"].to_numpy(), (1 - w) * alone.table["attribution"].to_numpy())
    # the GRUs' rows: one per event (as one GRU gives), each w x the mean of the GRUs' own attributions
    each = [explain_model(m, events, held, label="t2d_365d", n_samples=16).table for m in fitted.records_]
    rec = attr.table[attr.table["member"] == "record"]
    assert len(rec) == len(each[0])
    np.testing.assert_allclose(
        rec["attribution"].to_numpy(),
        w * np.mean([t["attribution"].to_numpy() for t in each], axis=0),
        rtol=1e-5,
        atol=1e-8,
    )


def test_parameters_are_checked(events, labels):
    from twinml._validation import ConfigError

    train = split_rows(labels, "train")
    with pytest.raises(
        ConfigError,
        match=r"^The 'record_weight' parameter of BlendRiskModel must be a number in \[0, 1\] or \"auto\". "
        r"Got 2 instead.$",
    ):
        BlendRiskModel(record_weight=2).fit(events, train)
    with pytest.raises(
        ConfigError,
        match=r"^The 'record_weight' parameter of BlendRiskModel is 'auto', which chooses the weight on the tuning "
        r"rows, but fit got no tuning_labels: pass them, or set record_weight to a number in \[0, 1\].$",
    ):
        BlendRiskModel(record_weight="auto").fit(events, train)
    with pytest.raises(
        ConfigError,
        match=r"^The 'n_record_members' parameter of BlendRiskModel must be a positive int. "
        r"Got 0 instead.$",
    ):
        BlendRiskModel(n_record_members=0).fit(events, train)
    with pytest.raises(
        ConfigError,
        match=r"^The 'random_state' parameter of BlendRiskModel must be an int when "
        r"n_record_members > 1 \(the GRUs are seeded random_state \+ k\). Got None instead.$",
    ):
        BlendRiskModel(random_state=None).fit(events, train)
    members, _ = BlendRiskModel(
        record_params={"random_state": 7, "trajectory_codes": "auto"}, random_state=5
    )._members()
    assert [(m.random_state, m.trajectory_codes) for m in members] == [(7, "auto"), (8, None), (9, None)]
    with pytest.raises(ConfigError, match="may not set 'calibration': the blend is calibrated as a whole"):
        BlendRiskModel(record_params={"calibration": "platt"}).fit(events, train)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'depth'"):
        BlendRiskModel(record_params={"depth": 3}).fit(events, train)


def test_blend_trains_through_the_pipeline_and_serves_as_pyfunc(tmp_path):
    import mlflow

    from .conftest import train_and_serve

    params = {
        "record_weight": "auto",
        "record_params": {"d_model": 8, "max_epochs": 1, "n_threads": 1, "trajectory_codes": None},
        "tabular_params": {"model_params": {"n_estimators": 20}},
    }
    res, run = train_and_serve(tmp_path, {"kind": "blend", "calibration": "platt", "params": params})
    assert run.data.params["model.kind"] == "blend" and run.data.params["model.params.record_weight"] == "auto"
    chosen = float(run.data.tags["twinml.record_weight"])  # "auto" resolved, as the tag records it
    history = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(
        res.run_id, "blend/tuning_loss"
    )
    losses = {m.step / 100: m.value for m in history}
    assert sorted(losses) == list(WEIGHT_GRID) and chosen == min(losses, key=losses.get)
