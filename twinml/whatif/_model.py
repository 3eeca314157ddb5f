"""The what-if model, :class:`TreatmentResponseModel`: risk curves under each treatment plan, with bands and
overlap flags. How it learns, adjusts for confounding and sizes its bands: :mod:`twinml.whatif`; its head
refit: ``_heads.py``; its overlap rule: ``_support.py``; its training targets: ``_training.py``."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import norm
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from .._validation import POSITIVE_INT, ConfigError, Rule, check_params, number_in, one_of
from ..cohort import PlanSet, factual_plans, load_plans
from ..features import SequenceFeaturizer
from ..models import RiskBands, SequenceRiskModel, label_columns_of
from ..models.parts import (
    TreatmentResponseNet,
    base_hazard_logits,
    curve_frame,
    forecast_loss,
    hazard_targets,
    parse_label_columns,
    risk_curve,
)
from ..models.parts import mask_and_target as _mask_and_target
from ..models.parts import tensors as _tensors
from ..models.parts import torch_threads as _torch_threads
from ._heads import fit_bootstrap_heads, plan_logits, stabilised_ipw
from ._prediction import PlanPrediction
from ._support import support_flags, support_thresholds
from ._training import STAGE1_EFFECT_L2, Targets, factual_logits, member_line, subset_rows

__all__ = ["TreatmentResponseModel"]


def _encoder_setting(name: str) -> property:
    def get(self):
        # a fitted model reads the settings it was fitted with (encoder_), not a template changed since
        enc = self.__dict__.get("encoder_") or self.encoder
        return getattr(enc if enc is not None else _DEFAULT_ENCODER, name)

    return property(get, doc=f"The encoder's ``{name}`` (set it as ``encoder__{name}``).")


_DEFAULT_ENCODER = SequenceRiskModel()  # read only: the settings of encoder=None
ENCODER_SETTINGS = tuple(
    p
    for p in SequenceRiskModel._get_param_names()
    if p not in ("trajectory_codes", "trajectory_horizons_days", "calibration")
)


class TreatmentResponseModel(SequenceRiskModel):
    """Risk curves under alternative treatment plans from event sequences (see the module docstring).

    Parameters
    ----------
    plans : PlanSet, dict or path to a plans YAML
        The options compared; the reference plan comes first in every output.
    encoder : SequenceRiskModel or None
        The sequence model whose settings the encoder, its training and the seed take (``kind``,
        ``d_model``, ``max_len``, ``max_epochs``, ``n_threads``, ``random_state``, ...; its
        ``trajectory_codes`` are not used and ``calibration`` must be None). It is a template, never
        fitted itself. None: ``SequenceRiskModel()``'s defaults. Nested settings work as in
        scikit-learn: ``set_params(encoder__d_model=32)``, ``get_params()["encoder__d_model"]``;
        in a config, ``model.params: {encoder: {d_model: 32}}``. Each setting is also readable on the
        model (``model.d_model``).
    balancing : {None, "ipw"}
        ``ipw`` weights the factual loss (both stages) by stabilised inverse propensity weights,
        clipped to ``[1 / max_weight, max_weight]``; None relies on adjustment for the history.
    n_boot : int
        Bootstrap effect heads (the band's spread).
    band : float
        Coverage the effect band aims at (0.9 -> mean +/- 1.645 SD across heads).
    effect_l2 : float
        Ridge penalty (in units of observations) on how much a plan's log-odds offset may vary with
        the representation. Large values keep the
        effect a constant hazard ratio, whose size in risk still varies with the patient's risk.
        The average offset gets only ``base_l2``.
    base_l2 : float
        Ridge penalty on the heads' base term and on each plan's average offset (a weak hold that
        keeps a plan with no events among its recipients finite).
    head_max_iter : int
        L-BFGS iterations of the head refit.
    cross_fit : bool
        Two folds by subject: each fold's encoder learns on the other fold's rows, its heads are
        fitted on its own, and predictions average the two (no head reads a representation that
        saw its rows' outcomes). False (default): one encoder and its heads on every training row;
        measured on the simulator, cross-fitting changed neither PEHE nor band coverage.
    n_encoders : int
        A deep ensemble: this many encoders, each from its own random start and with its own
        bootstrap heads. The band pools every encoder's heads, so it carries the disagreement between
        representations as well as the sampling spread of the heads. Costs ``n_encoders`` times the fit.
    propensity_weight : float
        Weight of the propensity cross-entropy in the training loss.
    min_propensity, support_quantile, min_recipients : overlap rule (see the module docstring)

    Attributes
    ----------
    plans_ : PlanSet
    encoder_ : SequenceRiskModel
        A copy of the encoder settings it was fitted with (what ``model.d_model`` and the others read).
    plan_names_ : list of str, reference first
    plan_counts_ : dict of plan -> training rows that followed it
    support_threshold_ : array (plans,), propensity below which a plan is outside support
    """

    history_: list[dict]  # the loss per epoch of every ensemble member, one after another
    # the sequence model's settings that have no meaning here
    trajectory_codes, trajectory_horizons_days, calibration = None, (90, 180, 365), None

    def __init__(
        self,
        plans=None,
        encoder=None,
        balancing=None,
        max_weight=20.0,
        n_boot=20,
        band=0.9,
        effect_l2=1000.0,
        base_l2=1.0,
        head_max_iter=200,
        cross_fit=False,
        n_encoders=3,
        propensity_weight=1.0,
        min_propensity=1e-3,
        support_quantile=0.01,
        min_recipients=20,
    ):
        self.plans = plans
        self.encoder = encoder
        self.balancing = balancing
        self.max_weight = max_weight
        self.n_boot = n_boot
        self.band = band
        self.effect_l2 = effect_l2
        self.base_l2 = base_l2
        self.head_max_iter = head_max_iter
        self.cross_fit = cross_fit
        self.n_encoders = n_encoders
        self.propensity_weight = propensity_weight
        self.min_propensity = min_propensity
        self.support_quantile = support_quantile
        self.min_recipients = min_recipients

    def set_params(self, **params):
        """As scikit-learn's; ``encoder__<name>`` settings on a model without an encoder start from
        a default :class:`SequenceRiskModel`."""
        if any(k.startswith("encoder__") for k in params) and params.get("encoder", self.encoder) is None:
            params = {**params, "encoder": SequenceRiskModel()}
        return super().set_params(**params)

    def __setstate__(self, state):
        # models pickled before the encoder's settings were nested keep them flat: nest them
        if "encoder" not in state:
            flat = {k: state.pop(k) for k in ENCODER_SETTINGS if k in state}
            state["encoder"] = SequenceRiskModel(**flat)
            if "nets_" in state:  # fitted: the settings it was fitted with
                state["encoder_"] = clone(state["encoder"])
        super().__setstate__(state)

    def _validate_params(self):
        check_params(
            self,
            {
                "encoder": Rule(
                    "None or a SequenceRiskModel without calibration",
                    lambda e: e is None or (type(e) is SequenceRiskModel and e.calibration is None),
                ),
                "balancing": one_of(("ipw", None), "'ipw' or None"),
                "band": number_in(0.5, 1, lo_closed=False, hi_closed=False, words="in (0.5, 1)"),
                "n_boot": Rule("an int >= 2", lambda v: POSITIVE_INT.ok(v) and v >= 2),
                "n_encoders": POSITIVE_INT,
            },
        )
        check_params(self, SequenceRiskModel._param_rules, prefix="encoder__")  # the encoder's settings
        if self.plans is None:
            raise ConfigError(
                "TreatmentResponseModel needs 'plans' (a plans YAML, dict or PlanSet); in a config: task.treatment."
            )

    def fit(self, events: pd.DataFrame, labels: pd.DataFrame, *, tuning_labels=None, progress=None):
        """Train on ``labels`` rows with their factual plans; early-stop on ``tuning_labels``."""
        self.__dict__.pop("encoder_", None)  # the settings are the template's until the fit keeps a copy
        self._validate_params()
        self.encoder_ = clone(self.encoder) if self.encoder is not None else SequenceRiskModel()
        say = progress or (lambda msg: None)
        self.plans_ = self.plans if isinstance(self.plans, PlanSet) else load_plans(self.plans)
        self.plan_names_ = self.plans_.names
        self.label_columns_ = label_columns_of(labels)
        self.outcomes_, self.horizons_ = parse_label_columns(self.label_columns_)
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)

        labels, plan_train = self._with_plans(events, labels, "train", say)
        self.plan_counts_ = {p: int((plan_train == i).sum()) for i, p in enumerate(self.plan_names_)}
        say("factual plans (train rows): " + ", ".join(f"{p} {n:,}" for p, n in self.plan_counts_.items()))
        train_events = events[events["subject_id"].isin(labels["subject_id"].unique())]
        self.featurizer_ = SequenceFeaturizer(self.max_len, self.min_code_count).fit(train_events)
        train = self.featurizer_.transform(events, labels)
        y_train = hazard_targets(labels, self.outcomes_, self.horizons_)
        subj = pd.factorize(labels["subject_id"])[0]
        boot = rng.poisson(1.0, (subj.max(initial=0) + 1, self.n_boot)).astype(np.float32)[subj]
        self.plan_share_ = np.bincount(plan_train, minlength=len(self.plan_names_)) / max(plan_train.size, 1)
        targets = Targets(y_train, plan_train, boot)
        tuning_labels, tune, tune_targets = self._tuning_data(events, tuning_labels, say)
        say(f"sequences: {len(train):,} train rows, mean length {train.lengths.mean():.0f} (cap {self.max_len})")
        forecast, codes = self._forecast_targets(train, say)
        # Cross-fitting: with two folds (by subject), each encoder learns on one fold and its heads are
        # fitted on the other, so no head reads a representation shaped by its own rows' outcomes.
        n_folds = 2 if self.cross_fit else 1
        fold = rng.permutation(subj.max(initial=0) + 1)[subj] % n_folds
        prop = np.zeros((len(train), len(self.plan_names_)), np.float32)
        history: list[dict] = []
        self.nets_, self.heads_ = [], []  # member m: encoder m // n_folds, fold m % n_folds
        with _torch_threads(self.n_threads):
            for m in range(self.n_encoders * n_folds):
                f = m % n_folds
                learn = np.flatnonzero(fold != f) if n_folds > 1 else np.arange(len(train))
                held = np.flatnonzero(fold == f) if n_folds > 1 else learn
                if n_folds > 1 or self.n_encoders > 1:
                    say(member_line(m, n_folds, self.n_encoders, learn, held))
                if m > 0 and f == 0:  # each encoder of an ensemble has its own bootstrap weights for its heads
                    boot = rng.poisson(1.0, (subj.max(initial=0) + 1, self.n_boot)).astype(np.float32)[subj]
                    targets = Targets(y_train, plan_train, boot)
                self.net_ = self._new_net(codes.size, y_train[learn])
                self._forecast = None if forecast is None else tuple(a[learn] for a in forecast)
                self._train(subset_rows(train, learn), targets[learn], tune, tune_targets, rng, say)
                history += [{**h, "epoch": len(history) + h["epoch"]} for h in self.history_]
                rep, p_held = self._outputs(subset_rows(train, held))
                prop[held] += p_held / self.n_encoders
                self.nets_.append(self.net_)
                self.heads_.append(self._fit_heads(rep, p_held, targets[held], say))
            self.history_ = history
            self.calibrator_ = None
        self.support_threshold_ = self._support_thresholds(prop, plan_train)
        say(
            "support thresholds (propensity): "
            + ", ".join(f"{p} {t:.4f}" for p, t in zip(self.plan_names_, self.support_threshold_))
        )
        self.risk_bands_ = None if tune is None else self._fit_risk_bands(tune, tuning_labels)
        return self

    def _tuning_data(self, events, tuning_labels, say):
        """The tuning rows with their factual plans, their sequences and targets (all None without rows)."""
        if tuning_labels is None or not len(tuning_labels):
            return tuning_labels, None, None
        tuning_labels, plan_tune = self._with_plans(events, tuning_labels, "tuning", say)
        tune = self.featurizer_.transform(events, tuning_labels)
        targets = Targets(
            hazard_targets(tuning_labels, self.outcomes_, self.horizons_),
            plan_tune,
            np.ones((plan_tune.size, self.n_boot), np.float32),
        )
        return tuning_labels, tune, targets

    def _new_net(self, n_forecast, y_learn):
        """A fresh network, its hazard bias at the base hazards of ``y_learn`` and its propensity bias at the
        plans' log shares."""
        net = TreatmentResponseNet(
            n_plans=len(self.plan_names_),
            n_boot=self.n_boot,
            n_codes=self.featurizer_.n_codes_,
            n_static=self.featurizer_.n_static_,
            n_outcomes=len(self.outcomes_),
            n_bins=len(self.horizons_),
            d_model=self.d_model,
            encoder=self.kind,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            dropout=self.dropout,
            n_forecast=n_forecast,
        )
        with torch.no_grad():
            net.risk.head.linear.bias.copy_(torch.from_numpy(base_hazard_logits(y_learn)).flatten())
            net.propensity.bias.copy_(torch.log(torch.from_numpy(self.plan_share_ + 1e-4)).float())
        return net

    def _fit_risk_bands(self, tune, tuning_labels):
        with _torch_threads(self.n_threads):
            curve = self._policy_curve(tune)
        return RiskBands.fit(
            curve_frame(tuning_labels, curve, self.outcomes_, self.horizons_, self.label_columns_),
            tuning_labels,
            self.label_columns_,
        )

    def _with_plans(self, events, labels, split, say):
        fp = factual_plans(events, labels, self.plans_)
        known = fp["plan"].notna().to_numpy()
        if (~known).any():
            say(
                f"{split}: {int((~known).sum()):,} of {len(labels):,} rows started treatments that match no plan; "
                "left out of treatment-response training"
            )
        plan = pd.Index(self.plan_names_).get_indexer(fp["plan"][known])
        return labels[known].reset_index(drop=True), plan.astype(np.int64)

    def _support_thresholds(self, prop, plan):
        return support_thresholds(
            prop,
            plan,
            min_recipients=self.min_recipients,
            min_propensity=self.min_propensity,
            quantile=self.support_quantile,
        )

    # -- training ---------------------------------------------------------------------------------
    def _loss(self, batch, t: Targets, *, training: bool):
        r = self.net_.risk.represent(**_tensors(batch))
        base, offset, prop_logits = self.net_.heads(r)
        plan = torch.from_numpy(t.plan)
        logits = factual_logits(base, offset, plan)
        mask, target = _mask_and_target(torch.from_numpy(t.y))
        bce = F.binary_cross_entropy_with_logits(logits, target.unsqueeze(1).expand_as(logits), reduction="none")
        w = mask.unsqueeze(1).expand_as(bce)
        if training:
            w = w * torch.from_numpy(t.boot).view(*t.boot.shape, 1, 1)
            if self.balancing == "ipw":
                ipw = self._ipw(t.plan, torch.softmax(prop_logits.detach(), dim=-1).numpy())
                w = w * torch.from_numpy(ipw).view(-1, 1, 1, 1)
        outcome = (bce * w).sum() / w.sum().clamp(min=1.0)
        propensity = F.cross_entropy(prop_logits, plan)
        loss = outcome + self.propensity_weight * propensity
        if training:  # a light hold on heterogeneity while the representation forms; the heads are refitted after
            loss = loss + STAGE1_EFFECT_L2 * self.net_.effect_weight.pow(2).sum(dim=(2,)).mean()
        if training and "forecast_value" in batch:
            loss = loss + self.forecast_weight * forecast_loss(
                self.net_.risk.forecast(r),
                torch.from_numpy(batch["forecast_value"]),
                torch.from_numpy(batch["forecast_observed"]),
            )
        return loss

    def train_step(self, batch, y, opt) -> float:
        opt.zero_grad()
        loss = self._loss(batch, y, training=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net_.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    def _eval_loss(self, data, y) -> float:
        self.net_.eval()
        total, n = 0.0, 0
        with torch.inference_mode():
            for rows in self._batches(data.lengths, batch_size=1024):
                total += float(self._loss(data.batch(rows), y[rows], training=False)) * rows.size
                n += rows.size
        return total / max(n, 1)

    def _fit_heads(self, rep, prop, t: Targets, say):
        """Refit every bootstrap head on the frozen representation, to convergence (``_heads.py``)."""
        t0 = time.perf_counter()
        w = torch.from_numpy(t.boot).double()
        if self.balancing == "ipw":
            w = w * torch.from_numpy(self._ipw(t.plan, prop)).double()[:, None]
        head = self.net_.risk.head.linear
        with torch.no_grad():
            start = {
                "base_weight": head.weight.detach().T.unsqueeze(0).repeat(self.n_boot, 1, 1),
                "base_bias": head.bias.detach().unsqueeze(0).repeat(self.n_boot, 1),
                "effect_bias": self.net_.effect_bias.detach(),
                "effect_weight": self.net_.effect_weight.detach(),
            }
        heads = fit_bootstrap_heads(
            rep,
            t.y,
            t.plan,
            w,
            start,
            n_plans=len(self.plan_names_),
            effect_l2=self.effect_l2,
            base_l2=self.base_l2,
            max_iter=self.head_max_iter,
        )
        say(f"refitted {self.n_boot} bootstrap heads on the frozen representation in {time.perf_counter() - t0:.1f}s")
        return heads

    def _ipw(self, plan, prop):
        return stabilised_ipw(plan, prop, self.plan_share_, self.max_weight)

    # -- prediction -------------------------------------------------------------------------------
    def _outputs(self, data, batch_size=1024, net=None):
        """Representation (rows, d_model) and plan propensities (rows, plans) from one encoder."""
        net = net or self.net_
        n, p = len(data), len(self.plan_names_)
        rep = np.empty((n, self.d_model), np.float32)
        prop = np.empty((n, p), np.float32)
        net.eval()
        with torch.inference_mode():
            for rows in self._batches(data.lengths, batch_size=batch_size):
                r = net.risk.represent(**_tensors(data.batch(rows)))
                rep[rows], prop[rows] = r.numpy(), torch.softmax(net.propensity(r), -1).numpy()
        return rep, prop

    def _plan_logits(self, rep, heads) -> np.ndarray:
        """Hazard logits under every plan for every head: (rows, heads, plans, outcomes, bins)."""
        return plan_logits(rep, heads, (self.n_boot, len(self.plan_names_), len(self.outcomes_), len(self.horizons_)))

    def _plan_risks(self, data):
        """Risk curves (rows, heads, plans, outcomes, bins) and propensities.

        Cross-fitted folds of one encoder are averaged; the encoders of an ensemble pool their heads
        (``n_encoders * n_boot`` along the head axis). Propensities average over every member.
        """
        n_folds = len(self.nets_) // getattr(self, "n_encoders", 1)
        pooled: list = []
        prop: float | np.ndarray = 0.0
        for e in range(len(self.nets_) // n_folds):
            risk: float | np.ndarray = 0.0
            for net, heads in zip(
                self.nets_[e * n_folds : (e + 1) * n_folds], self.heads_[e * n_folds : (e + 1) * n_folds]
            ):
                rep, p = self._outputs(data, net=net)
                with torch.inference_mode():
                    logits = self._plan_logits(rep, heads)
                    risk = risk + risk_curve(torch.from_numpy(logits)).numpy().astype(np.float64)
                prop = prop + p
            pooled.append(risk / n_folds)
        return np.concatenate(pooled, axis=1), prop / len(self.nets_)

    def predict_plans(self, events: pd.DataFrame, index: pd.DataFrame) -> PlanPrediction:
        """Risk under every plan, effects against the reference with bands, propensities and support."""
        check_is_fitted(self, "net_")
        with _torch_threads(self.n_threads):
            risk, prop = self._plan_risks(self.featurizer_.transform(events, index))
        effect = risk - risk[:, :, :1]
        z = norm.ppf(0.5 + self.band / 2.0)
        already = factual_plans(events, index, self.plans_)
        in_support, reason = self._support(prop, already)
        gone = ~in_support[:, :, None, None]

        def band(x):
            mean, sd = x.mean(axis=1), x.std(axis=1, ddof=1)
            return mean, mean - z * sd, mean + z * sd

        r, r_lo, r_hi = band(risk)
        e, e_lo, e_hi = band(effect)
        for arr in (r, r_lo, r_hi, e, e_lo, e_hi):
            arr[np.broadcast_to(gone, arr.shape)] = np.nan
        return PlanPrediction(
            index[["subject_id", "prediction_time"]].reset_index(drop=True),
            list(self.plan_names_),
            list(self.outcomes_),
            list(self.horizons_),
            r,
            np.clip(r_lo, 0, 1),
            np.clip(r_hi, 0, 1),
            e,
            e_lo,
            e_hi,
            prop.astype(np.float64),
            in_support,
            reason,
            self.band,
        )

    def _support(self, prop, already):
        return support_flags(
            prop, already, self.support_threshold_, self.plan_names_, min_recipients=self.min_recipients
        )

    def predict_risk_curve(self, events: pd.DataFrame, index: pd.DataFrame, *, calibrated: bool = True) -> np.ndarray:
        """Risk under the observed prescribing policy: the plans' risks weighted by their propensities."""
        check_is_fitted(self, "net_")
        with _torch_threads(self.n_threads):
            return self._policy_curve(self.featurizer_.transform(events, index))

    def _policy_curve(self, data) -> np.ndarray:
        risk, prop = self._plan_risks(data)
        return np.einsum("np,npob->nob", prop, risk.mean(axis=1)).astype(np.float32)


for _name in ENCODER_SETTINGS:
    setattr(TreatmentResponseModel, _name, _encoder_setting(_name))
