"""A sequence risk model over each subject's whole record: one causal GRU pass per subject, read out
at every prediction time of that subject."""

from __future__ import annotations

import numpy as np
import torch

from .._arrays import ragged_arange
from .._validation import NON_NEGATIVE_INT, POSITIVE_INT, check_params
from ..features import UNKNOWN, RecordFeaturizer
from ._sequence_model import SequenceRiskModel
from ._torch_modules import RecordRiskNet

__all__ = ["RecordRiskModel"]

_RECORD_KEYS = (
    "event_code",
    "event_value",
    "event_offsets",
    "visit_slot",
    "visit_features",
    "readout",
    "readout_features",
    "static",
)


class RecordRiskModel(SequenceRiskModel):
    """Multi-outcome risk curves from a subject's whole record, with the discrete-time hazard head.

    Events that share a timestamp form a visit; a visit is embedded as the mean of its events'
    code embeddings and code-specific value directions plus its time features (gap since the
    previous visit, number of events, age); a GRU runs **once over all of a subject's visits**, and
    each prediction row reads the state after its last visit at or before the prediction time
    (with the time since that visit and the row's static traits). No cap on history: a 35-year
    record is read whole, and each event is encoded once per epoch however many rows read it.

    Parameters are those of :class:`SequenceRiskModel` except: no ``kind``, ``n_heads`` or
    ``max_len``; ``batch_size`` counts subjects (all rows of a subject share one pass); and
    ``n_last_values`` (default 0, off): for this many numeric codes (the most frequent in training)
    the last reading at or before the prediction time, whether there is one and how long ago, read
    out beside the recurrent state (:class:`RecordFeaturizer`). Measured on the tuning splits
    (``benchmarks/realdata.py --report tuning --params ...``, ``benchmarks/sequence.py --params``):
    on Synthea dev, 32 codes took the tuning loss from 0.02381 to 0.02328 and the GRU's mean AUROC
    of the five main tasks from 0.842 to 0.848 (64 codes or a second GRU layer: 0.02330, 0.02329),
    and left the blend's as it was (0.873); on the 20,000-subject simulator (7 numeric codes) the
    tuning loss was worse, 0.03227 against 0.03216, and training stopped at epoch 10 instead of 15.
    So it stays opt-in. Explanations do not attribute through these inputs (they are held fixed).
    ``min_text_subjects`` (default 0, off): text answers recorded for at least this many training
    subjects are event codes of their own (:func:`~twinml.features.with_text_codes`).
    ``max_epochs`` is 30 with patience 4: on Synthea dev the GRU was still improving at epoch 15
    (best epoch 21, tuning loss 0.02381 -> 0.02364); on the 20,000-subject simulator the best epochs
    were 11, 13 and 15 (seeds 0, 1, 2), so two of those seeds trained past 15.

    Attributes
    ----------
    featurizer_ : RecordFeaturizer
    net_ : RecordRiskNet
    outcomes_, horizons_, label_columns_, history_, best_epoch_ : as :class:`SequenceRiskModel`
    """

    kind, n_heads, max_len = "gru", 4, 1  # not parameters here; the parent's checks read them
    min_text_subjects = 0  # models pickled before this parameter read as fitted without text codes

    def __init__(
        self,
        d_model=64,
        n_layers=1,
        dropout=0.1,
        min_code_count=10,
        batch_size=32,
        lr=1e-3,
        weight_decay=1e-3,
        max_epochs=30,
        patience=4,
        event_dropout=0.0,
        forecast_weight=0.1,
        forecast_days=365.0,
        n_last_values=0,
        min_text_subjects=0,
        trajectory_codes="auto",
        trajectory_horizons_days=(90, 180, 365),
        calibration=None,
        n_threads=None,
        random_state=0,
    ):
        self.d_model = d_model
        self.n_layers = n_layers
        self.dropout = dropout
        self.min_code_count = min_code_count
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.event_dropout = event_dropout
        self.forecast_weight = forecast_weight
        self.forecast_days = forecast_days
        self.n_last_values = n_last_values
        self.min_text_subjects = min_text_subjects
        self.trajectory_codes = trajectory_codes
        self.trajectory_horizons_days = trajectory_horizons_days
        self.calibration = calibration
        self.n_threads = n_threads
        self.random_state = random_state

    def _validate_params(self):
        check_params(
            self,
            {"min_code_count": POSITIVE_INT, "n_last_values": NON_NEGATIVE_INT, "min_text_subjects": NON_NEGATIVE_INT},
        )
        super()._validate_params()

    def _make_featurizer(self):
        return RecordFeaturizer(
            self.min_code_count,
            n_last_values=self.n_last_values,
            min_text_subjects=self.min_text_subjects,
        )

    def _describe(self, train, say):
        sv = train.subject_visits[np.unique(train.row_subject[train.row_subject >= 0])]
        n_vis = sv[:, 1] - sv[:, 0]
        say(
            f"records: {len(train):,} train rows of {n_vis.size:,} subjects; visits read per subject: median "
            f"{np.median(n_vis):.0f}, max {n_vis.max(initial=0):,}; events per row: median "
            f"{np.median(train.lengths):.0f} (no cap)"
        )

    def _make_net(self, n_forecast):
        return RecordRiskNet(
            n_codes=self.featurizer_.n_codes_,
            n_static=self.featurizer_.n_static_,
            n_outcomes=len(self.outcomes_),
            n_bins=len(self.horizons_),
            d_model=self.d_model,
            n_layers=self.n_layers,
            dropout=self.dropout,
            n_forecast=n_forecast,
            n_readout=2 + 3 * len(self.featurizer_.last_value_codes_),
        )

    def _net_inputs(self, batch):
        t = {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in _RECORD_KEYS}
        return t | {"n_subjects": int(batch["n_subjects"]), "width": int(batch["width"])}

    def _row_batches(self, data, *, rng=None, batch_size=None):
        """All rows of ``batch_size`` subjects per batch (``batch_size`` rows' worth of subjects when
        predicting), subjects of similar record length together; order shuffled when ``rng`` is given."""
        subj = data.row_subject
        order = np.argsort(subj, kind="stable")
        uniq, first, count = np.unique(subj[order], return_index=True, return_counts=True)
        sv = data.subject_visits[np.maximum(uniq, 0)]
        n_vis = np.where(uniq >= 0, sv[:, 1] - sv[:, 0], 0)
        jitter = rng.random(uniq.size) if rng is not None else np.zeros(uniq.size)
        by_len = np.lexsort((jitter, n_vis))
        per = self.batch_size if batch_size is None else max(1, batch_size // max(1, int(np.median(count))))
        groups = [by_len[i : i + per] for i in range(0, by_len.size, per)]
        if rng is not None:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        return [order[ragged_arange(first[grp], count[grp])] for grp in groups]

    def _drop_events(self, batch, rng):
        drop = rng.random(batch["event_code"].shape) < self.event_dropout
        batch["event_code"][drop], batch["event_value"][drop] = UNKNOWN, 0.0
