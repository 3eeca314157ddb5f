"""The whole-record GRU and LightGBM as one estimator, stacked on the tuning rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .._validation import DICT_OR_NONE, POSITIVE_INT, ConfigError, Rule, check_params, number_in, one_of
from ._bands import RiskBands
from ._hazard import (
    HazardCalibrator,
    calibrated_curve,
    curve_frame,
    hazard_loss,
    hazard_targets,
    parse_label_columns,
    risk_curve,
)
from ._sequence_model import _torch_threads
from ._tabular_model import TabularRiskModel, label_columns_of

__all__ = ["BlendRiskModel"]

_EPS = 1e-6
WEIGHT_GRID = tuple(round(0.1 * k, 1) for k in range(1, 10))  # the weights "auto" chooses among
_WEIGHT = Rule('a number in [0, 1] or "auto"', lambda v: (isinstance(v, str) and v == "auto") or number_in(0, 1).ok(v))


def hazard_logits_of_risks(risk: np.ndarray) -> np.ndarray:
    """Cumulative risks (n, outcomes, horizons) -> the hazard logit of each horizon bin.

    Bin k's hazard is ``1 - (1 - r_k) / (1 - r_{k-1})``; risks that fall with the horizon (a tabular
    model fits each horizon on its own) give the smallest hazard, so the curve rebuilt from the
    hazards is the running maximum of the risks.
    """
    r = np.clip(np.maximum.accumulate(risk.astype(np.float64), axis=-1), _EPS, 1 - _EPS)
    before = np.concatenate([np.zeros_like(r[..., :1]), r[..., :-1]], axis=-1)
    h = np.clip(1.0 - (1.0 - r) / (1.0 - before), _EPS, 1 - _EPS)
    return np.log(h / (1.0 - h)).astype(np.float32)


def blend_logits(z: np.ndarray, weight: float) -> np.ndarray:
    """The blend's hazard logits from :meth:`BlendRiskModel.member_logits`' ``z`` at record weight ``weight``."""
    return (weight * z[..., 0] + (1.0 - weight) * z[..., 1]).astype(np.float32)


def tuning_losses(z: np.ndarray, y: np.ndarray, weights=WEIGHT_GRID) -> dict[float, float]:
    """The hazard loss on the tuning rows (``z`` their member logits, ``y`` their hazard targets) of the
    blend at each weight, Platt-recalibrated on those rows first: what ``record_weight="auto"`` minimises."""
    out = {}
    for w in weights:
        zw = blend_logits(z, w)
        calibrator = HazardCalibrator("platt").fit(zw, y)
        with torch.no_grad():
            out[w] = float(hazard_loss(calibrator(torch.from_numpy(zw)).double(), torch.from_numpy(y).double()))
    return out


class BlendRiskModel(BaseEstimator):
    """One risk model from two: :class:`RecordRiskModel` (a GRU over each subject's whole record) and
    :class:`TabularRiskModel` (LightGBM on windowed aggregates).

    Each member is fitted on the training rows (early-stopped on the tuning rows, not calibrated).
    The blend's hazard logit for each outcome and horizon bin is ``w * z_record + (1 - w) * z_tabular``
    (the tabular risks turned into hazards, :func:`hazard_logits_of_risks`), then recalibrated on the
    tuning rows as the sequence models are (:class:`HazardCalibrator`), so curves stay monotone.

    One weight for all outcomes, chosen on the tuning rows (``record_weight="auto"``, the default), rather
    than a stack fitted per label: on the Synthea dev tuning split, a logistic stack fitted on one half of
    the tuning subjects and scored on the other was worse than the plain average on the rare outcomes (mean
    AUROC of nine tasks 0.832 against 0.848; MI 0.865 against 0.912). No fixed weight served both data
    sets: on the five Synthea dev subject folds (``benchmarks/realdata.py --models blend --report cv
    --blend-weights 0.1,0.2,0.25,0.3,0.4``) 0.3 beat 0.5 (mean AUROC of the five main tasks 0.876 against
    0.872, LightGBM alone 0.872; the GRUs' log-odds spread wider than LightGBM's), but on the
    20,000-subject simulator (``benchmarks/sequence.py 20000 30 --kinds blend --seeds 0``) 0.3 took the
    1-year T2D AUROC from 0.779 to 0.772 (0.945 x oracle, under the 0.95 bar). ``"auto"`` chose 0.1-0.2
    on each Synthea fold (``--report cv --params '{"blend": {"record_weight": "auto"}}'``: 0.875 on the five,
    0.858 on nine) and 0.9 on the simulator (``sequence.py ... --blend-params '{"record_weight": "auto"}'``:
    1-year T2D 0.782, 0.957 x oracle; MI 0.775, 0.966 x). Averaging the members' log-odds after
    Platt-scaling each on the tuning rows (cross-fitted on halves of each fold) gave 0.874 on the five and
    0.847 on nine (stroke fell); a GRU trained on the residual of LightGBM's out-of-fold log-odds (4 folds)
    did no better than the average either (five main tasks 0.864 against 0.866).

    ``z_record`` is the mean log-odds of ``n_record_members`` GRUs seeded ``random_state``,
    ``random_state + 1``, ...: on the Synthea dev tuning split (``benchmarks/realdata.py``'s tasks),
    three GRUs took the GRU side's mean AUROC of the five main tasks from 0.837 (seed 0 alone) to 0.851
    and the blend's from 0.866-0.871 (one GRU, seeds 0, 1, 2) to 0.871, for about three times the fit time.

    Parameters
    ----------
    record_weight : float in [0, 1] or "auto"
        ``w`` above. ``"auto"`` (the default; it needs tuning rows) chooses it on the tuning rows: the
        weight of :data:`WEIGHT_GRID` (0.1, 0.2, ..., 0.9) whose blend, Platt-scaled on those rows, has the
        least hazard loss there (:func:`tuning_losses`; Platt whatever ``calibration`` says, so the choice
        weighs ranking, not the calibrator's flexibility).
    n_record_members : int >= 1
        GRUs averaged on the record side (only the first fits the trajectory head).
    record_params : dict, optional
        :class:`RecordRiskModel` arguments (its defaults otherwise; no ``calibration``).
    tabular_params : dict, optional
        :class:`TabularRiskModel` arguments (``kind`` defaults to ``lightgbm``, ``subject_shares`` to 1; no
        ``calibration``). One LightGBM per label, not four on subject shares (LightGBM's own default): on
        the five Synthea dev subject folds (``benchmarks/realdata.py --models blend --report cv``) the blend
        scored 0.868 on the five main tasks with four shares against 0.872 with one.
    calibration : {None, "platt", "temperature", "isotonic"}
        Recalibration of the blended hazards on the tuning rows (see :class:`HazardCalibrator`).
    random_state : int
        Seeds both members.

    Attributes
    ----------
    records_ : list of RecordRiskModel
        The fitted GRUs; ``record_`` is the first (its featurizer and trajectory head serve the blend).
    tabular_ : the fitted LightGBM member
    record_weight_ : float
        The weight the blend uses: ``record_weight``, or the one ``"auto"`` chose (:meth:`blend_weight`).
    tuning_losses_ : dict or None
        For ``"auto"``: the tuning loss at each weight of the grid.
    calibrator_ : HazardCalibrator or None
    outcomes_, horizons_, label_columns_ : as :class:`SequenceRiskModel`
    """

    # models pickled before n_record_members had one GRU, as ``record_``
    records_ = None
    n_record_members = 1

    _param_rules = {
        "record_weight": _WEIGHT,
        "n_record_members": POSITIVE_INT,
        "calibration": one_of((None, *HazardCalibrator.METHODS), f"None or one of {list(HazardCalibrator.METHODS)}"),
        "record_params": DICT_OR_NONE,
        "tabular_params": DICT_OR_NONE,
    }

    def __init__(
        self,
        record_weight="auto",
        n_record_members=3,
        record_params=None,
        tabular_params=None,
        calibration="platt",
        random_state=0,
    ):
        self.record_weight = record_weight
        self.n_record_members = n_record_members
        self.record_params = record_params
        self.tabular_params = tabular_params
        self.calibration = calibration
        self.random_state = random_state

    def _members(self):
        from ._record_model import RecordRiskModel

        check_params(self, self._param_rules)
        for name in ("record_params", "tabular_params"):
            v = getattr(self, name)
            if v and "calibration" in v:
                raise ConfigError(
                    f"The {name!r} parameter of BlendRiskModel may not set 'calibration': the blend is "
                    f"calibrated as a whole (its 'calibration' parameter). Got {v['calibration']!r}."
                )
        n = self.n_record_members
        seed = (self.record_params or {}).get("random_state", self.random_state)
        if n > 1 and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(
                f"The 'random_state' parameter of BlendRiskModel must be an int when n_record_members > 1 "
                f"(the GRUs are seeded random_state + k). Got {seed!r} instead."
            )
        try:
            # members after the first fit no trajectory head: the blend's trajectories are the first's
            records = [
                RecordRiskModel(
                    **{
                        "random_state": self.random_state,
                        **(self.record_params or {}),
                        **({"random_state": seed + k, "trajectory_codes": None} if k else {}),
                    }
                )
                for k in range(n)
            ]
            tabular = TabularRiskModel(
                **{
                    "kind": "lightgbm",
                    "subject_shares": 1,
                    "random_state": self.random_state,
                    **(self.tabular_params or {}),
                }
            )
        except TypeError as err:
            raise ConfigError(f"BlendRiskModel: {err}".replace("__init__() ", "")) from None
        return records, tabular

    def record_members(self) -> list:
        """The fitted GRUs (one for models pickled before ``n_record_members``)."""
        check_is_fitted(self, "record_")
        return self.records_ if self.records_ is not None else [self.record_]

    def fit(
        self, events: pd.DataFrame, labels: pd.DataFrame, *, tuning_labels: pd.DataFrame | None = None, progress=None
    ):
        """Fit both members on ``labels`` (early-stopped on ``tuning_labels``); calibrate on ``tuning_labels``."""
        say = progress or (lambda msg: None)
        records, tabular = self._members()
        tuned = tuning_labels is not None and len(tuning_labels) > 0
        if self.record_weight == "auto" and not tuned:
            raise ConfigError(
                "The 'record_weight' parameter of BlendRiskModel is 'auto', which chooses the weight on the "
                "tuning rows, but fit got no tuning_labels: pass them, or set record_weight to a number in [0, 1]."
            )
        self.label_columns_ = label_columns_of(labels)
        self.outcomes_, self.horizons_ = parse_label_columns(self.label_columns_)
        n = len(records)
        for k, record in enumerate(records):
            say(
                f"--- blend member {k + 1} of {n + 1}: the whole-record GRU"
                + (f" (seed {record.random_state})" if n > 1 else "")
            )
            record.fit(events, labels, tuning_labels=tuning_labels, progress=progress)
            first = records[0].featurizer_
            if k and not (
                np.array_equal(record.featurizer_.vocabulary_, first.vocabulary_)
                and np.array_equal(record.featurizer_.last_value_codes_, first.last_value_codes_)
            ):
                raise RuntimeError("BlendRiskModel: the GRUs' featurizers differ, though fitted on the same events")
        self.records_, self.record_ = records, records[0]
        say(f"--- blend member {n + 1} of {n + 1}: LightGBM on tabular features")
        self.tabular_ = tabular.fit(events, labels, tuning_labels=tuning_labels, progress=progress)
        self._fit_on_tuning(events, tuning_labels if tuned else None, say)
        return self

    def _fit_on_tuning(self, events, tuning_labels, say) -> None:
        """The weight (``"auto"``: the grid's weight of least Platt-calibrated tuning loss), the
        calibrator and the risk bands, all on the tuning rows (none without them)."""
        self.record_weight_ = None if self.record_weight == "auto" else float(self.record_weight)
        self.tuning_losses_, self.calibrator_, self.risk_bands_ = None, None, None
        if tuning_labels is None:
            return
        y = hazard_targets(tuning_labels, self.outcomes_, self.horizons_)
        z = self.member_logits(events, tuning_labels)
        if self.record_weight == "auto":
            self.tuning_losses_ = tuning_losses(z, y)
            self.record_weight_ = min(self.tuning_losses_, key=self.tuning_losses_.__getitem__)
            shown = ", ".join(f"{w:g}: {loss:.5f}" for w, loss in self.tuning_losses_.items())
            say(f"blend: record weight {self.record_weight_:g}, the least tuning loss after Platt scaling ({shown})")
        zw = blend_logits(z, self.blend_weight())
        if self.calibration is not None:
            self.calibrator_ = HazardCalibrator(self.calibration).fit(zw, y)
        curve = calibrated_curve(torch.from_numpy(zw), self.calibrator_)
        risks = curve_frame(tuning_labels, curve, self.outcomes_, self.horizons_, self.label_columns_)
        self.risk_bands_ = RiskBands.fit(risks, tuning_labels, self.label_columns_)

    @property
    def featurizer_(self):
        """The record member's featurizer (its vocabulary and value statistics)."""
        return self.record_.featurizer_

    def member_logits(self, events, index) -> np.ndarray:
        """(n, outcomes, bins, 2): the record side's (the mean over its GRUs) and the tabular member's
        uncalibrated hazard logits."""
        members = self.record_members()
        with _torch_threads(self.record_.n_threads):
            data = self.record_.featurizer_.transform(events, index)  # the members' featurizers are equal
            zr = np.mean([m._logits(data) for m in members], axis=0, dtype=np.float64).astype(np.float32)
        tab = self.tabular_.predict_risk(events, index, calibrated=False)
        risk = np.stack(
            [np.stack([tab[f"{o}_{h}d"].to_numpy(np.float64) for h in self.horizons_], -1) for o in self.outcomes_], 1
        )
        return np.stack([zr, hazard_logits_of_risks(risk)], -1)

    def blend_weight(self) -> float:
        """The record side's weight in the fitted blend: ``record_weight``, or the one ``"auto"`` chose."""
        check_is_fitted(self, "record_")
        w = getattr(self, "record_weight_", None)  # models pickled before "auto" have none
        return float(self.record_weight if w is None else w)

    def _logits(self, events, index) -> np.ndarray:
        return blend_logits(self.member_logits(events, index), self.blend_weight())

    def predict_risk_at_weights(self, events: pd.DataFrame, index: pd.DataFrame, weights) -> dict[float, pd.DataFrame]:
        """The blend's uncalibrated risks (as :meth:`predict_risk`) at each of ``weights``, from the same
        members: for comparing weights by AUROC (the blend's logit is linear in the members' and
        calibration is monotone); not calibrated, so not for ECE."""
        z = self.member_logits(events, index)
        return {
            w: curve_frame(
                index,
                risk_curve(torch.from_numpy(blend_logits(z, w))).numpy(),
                self.outcomes_,
                self.horizons_,
                self.label_columns_,
            )
            for w in weights
        }

    def predict_risk_curve(self, events: pd.DataFrame, index: pd.DataFrame, *, calibrated: bool = True) -> np.ndarray:
        """Risk of each outcome within each horizon, (n_rows, n_outcomes, n_horizons); monotone.

        ``calibrated=False`` gives the blend's risks before the tuning-split calibrator.
        """
        check_is_fitted(self, "record_")
        return calibrated_curve(torch.from_numpy(self._logits(events, index)), self.calibrator_, calibrated)

    def predict_risk(self, events: pd.DataFrame, index: pd.DataFrame, *, calibrated: bool = True) -> pd.DataFrame:
        """Risk per label column for each row of ``index``, like :class:`TabularRiskModel`."""
        curve = self.predict_risk_curve(events, index, calibrated=calibrated)
        return curve_frame(index, curve, self.outcomes_, self.horizons_, self.label_columns_)

    def predict_trajectory(
        self, events: pd.DataFrame, index: pd.DataFrame, *, codes=None, horizons_days=None
    ) -> pd.DataFrame:
        """The record member's trajectory forecasts (:meth:`RecordRiskModel.predict_trajectory`)."""
        check_is_fitted(self, "record_")
        return self.record_.predict_trajectory(events, index, codes=codes, horizons_days=horizons_days)

    @property
    def trajectory_codes_(self) -> list[str]:
        return self.record_.trajectory_codes_
