"""Differentially private training of the sequence model: DP-SGD with opacus, the subject as the unit.

A subject contributes several prediction rows (one a year). Row-level DP-SGD would protect a row, not a
person, so the unit of privacy here is the subject:

- each step draws subjects, not rows, by Poisson sampling at rate ``q = subjects_per_step / n_subjects``
  (every training subject independently, as the subsampled-Gaussian accountant assumes);
- every prediction row of a drawn subject is in the step; opacus' :class:`~opacus.GradSampleModule`
  gives per-row gradients, which are summed per subject (the gradient of that subject's mean loss over
  its observed hazard bins) before opacus' :class:`~opacus.optimizers.DPOptimizer` clips each
  **subject's** gradient to ``max_grad_norm`` and adds Gaussian noise of ``noise_multiplier *
  max_grad_norm``. One subject changes a step's summed gradient by at most ``max_grad_norm``,
  whatever its number of rows: that is the bound the accountant is told;
- opacus' RDP accountant picks the noise multiplier for the planned steps (``max_epochs`` epochs of
  ``1 / q`` steps) and reports the ε actually spent (less when early stopping ends training sooner).

What the guarantee covers: the training subjects. Everything else the fit reads from them is moved to
the tuning subjects: the vocabulary and value scaling (the featurizer), the hazard head's starting
bias; the tuning subjects also choose the epoch and fit the calibrator and risk bands, so they are
**not** protected. The trajectory head (fitted on training rows without noise) is not trained.

Noise and subject sampling come from a seed drawn from the operating system unless ``reproducible``
is set: a noise seed anyone can read (``random_state`` is logged) would let them subtract the noise.
"""

from __future__ import annotations

import math
import secrets
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .._arrays import ragged_arange
from .._validation import ConfigError
from ._hazard import _mask_and_target

__all__ = ["check_privacy", "train_private", "SubjectDPSGD", "row_weights", "weighted_hazard_loss", "PRIVACY_DEFAULTS"]

# Rényi orders the accountant tries: opacus' defaults (1.1-63) and higher ones, which large budgets over
# few steps need (their bound is otherwise looser, and opacus warns)
ALPHAS = [1 + x / 10 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 192, 256, 384, 512, 768, 1024]
PRIVACY_DEFAULTS = {"delta": 1e-5, "max_grad_norm": 1.0, "subjects_per_step": 256, "reproducible": False}


def check_privacy(spec, owner: str = "SequenceRiskModel") -> dict:
    """``privacy=`` as given -> the full settings (defaults filled in), or a ConfigError naming the key."""
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{owner}: privacy must be a dict such as {{'epsilon': 8, 'delta': 1e-5, 'max_grad_norm': 1.0}}; "
            f"got {spec!r}"
        )
    unknown = sorted(set(spec) - {"epsilon", *PRIVACY_DEFAULTS})
    if unknown:
        raise ConfigError(
            f"{owner}: privacy key {unknown[0]!r} is not known; keys: epsilon, {', '.join(PRIVACY_DEFAULTS)}"
        )
    if "epsilon" not in spec:
        raise ConfigError(f"{owner}: privacy needs 'epsilon', the privacy budget (e.g. 8); got {spec!r}")
    out = {**PRIVACY_DEFAULTS, **spec}

    def number(key, ok, words):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
            raise ConfigError(f"{owner}: privacy {key} must be {words}; got {v!r}")

    number("epsilon", lambda v: v > 0, "a positive number")
    number("delta", lambda v: 0 < v < 1, "in (0, 1)")
    number("max_grad_norm", lambda v: v > 0, "a positive number")
    number("subjects_per_step", lambda v: v >= 1 and float(v).is_integer(), "a positive integer")
    if not isinstance(out["reproducible"], bool):
        raise ConfigError(f"{owner}: privacy reproducible must be true or false; got {out['reproducible']!r}")
    out["subjects_per_step"] = int(out["subjects_per_step"])
    return out


class SubjectDPSGD:
    """Subject-level DP-SGD over ``net`` (already made opacus-compatible): Poisson-sampled subjects,
    per-subject clipping and noise by opacus, an RDP accountant.

    ``row_subject``: the training rows' subject ids (any dtype), in row order.
    """

    def __init__(self, net, spec: dict, row_subject, *, epochs: int, lr: float, weight_decay: float, seed: int):
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.optimizers import DPOptimizer

        self.spec = spec
        _, subject_of_row = np.unique(np.asarray(row_subject), return_inverse=True)
        order = np.argsort(subject_of_row, kind="stable")
        counts = np.bincount(subject_of_row)
        self.rows_by_subject, self.offsets = order, np.concatenate([[0], np.cumsum(counts)])
        self.n_subjects = counts.size
        self.sample_rate = min(1.0, spec["subjects_per_step"] / self.n_subjects)
        self.steps_per_epoch = max(1, round(1 / self.sample_rate))
        planned = epochs * self.steps_per_epoch
        self.noise_multiplier = get_noise_multiplier(
            target_epsilon=spec["epsilon"],
            target_delta=spec["delta"],
            sample_rate=self.sample_rate,
            steps=planned,
            accountant="rdp",
            alphas=ALPHAS,
        )
        if not spec["reproducible"]:
            seed = secrets.randbits(63)
        self.rng = np.random.default_rng(seed)
        self.module = GradSampleModule(net, loss_reduction="sum")
        self.optimizer = DPOptimizer(
            torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay),
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=spec["max_grad_norm"],
            expected_batch_size=spec["subjects_per_step"],
            loss_reduction="mean",
            generator=torch.Generator().manual_seed(int(self.rng.integers(2**62))),
        )
        self.accountant = RDPAccountant()
        self.planned_steps = planned

    def epoch(self):
        """One epoch's steps: per step, the drawn subjects' rows and each row's index among the drawn."""
        for _ in range(self.steps_per_epoch):
            drawn = np.flatnonzero(self.rng.random(self.n_subjects) < self.sample_rate)
            starts, ends = self.offsets[drawn], self.offsets[drawn + 1]
            n = ends - starts
            local = np.repeat(np.arange(drawn.size), n)
            rows = self.rows_by_subject[ragged_arange(starts, n)]
            yield rows, local, drawn.size

    def step(self, chunks, n_drawn: int) -> None:
        """One DP-SGD step over the drawn subjects' rows, given as ``chunks`` of ``(loss_of, local)``:
        back-propagate each chunk's ``loss_of()`` (a sum over its rows of each row's share of its
        subject's loss; ``local`` is each row's subject among the drawn), sum the per-row gradients per
        subject across chunks, and let opacus clip, noise and step. No subject drawn is a noise-only step
        (a zero gradient), as the accountant assumes. Chunking bounds memory and padding, not the maths."""
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for p in self.module.parameters() if p.requires_grad]
        total = [p.new_zeros((max(n_drawn, 1), *p.shape)) for p in params]
        for loss_of, local in chunks:
            with warnings.catch_warnings():
                # opacus' hooks sit on the embeddings, whose inputs (codes) carry no gradient: harmless
                warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
                loss_of().backward()
            index = torch.from_numpy(local)
            for p, acc in zip(params, total):
                acc.index_add_(0, index, p.grad_sample)
                p.grad_sample = None
        for p, acc in zip(params, total):
            p.grad_sample = acc
        self.optimizer.step()
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def finish(self):
        """The trained network without opacus' hooks."""
        return self.module.to_standard_module()

    def report(self) -> dict:
        """What the fit spent, by the accountant: ε at the requested δ, and how it was trained."""
        steps = sum(n for _, _, n in self.accountant.history) if self.accountant.history else 0
        return {
            "epsilon": float(self.accountant.get_epsilon(self.spec["delta"], alphas=ALPHAS)) if steps else 0.0,
            "target_epsilon": float(self.spec["epsilon"]),
            "delta": float(self.spec["delta"]),
            "max_grad_norm": float(self.spec["max_grad_norm"]),
            "noise_multiplier": float(self.noise_multiplier),
            "sample_rate": float(self.sample_rate),
            "subjects_per_step": self.spec["subjects_per_step"],
            "steps": int(steps),
            "planned_steps": int(self.planned_steps),
            "accountant": "rdp",
            "unit": "subject",
            "reproducible": bool(self.spec["reproducible"]),
        }


def row_weights(y: np.ndarray, local: np.ndarray, n_drawn: int, observed: np.ndarray | None = None):
    """Each row's weight in its subject's loss: 1 / the subject's observed hazard bins in the step (so a
    subject's rows together weigh one mean loss); with ``observed`` (the auxiliary forecast's observed
    readings), also 1 / the subject's observed readings."""
    known = ~np.isnan(y)
    free_before = np.concatenate([np.ones_like(y[..., :1], bool), y[..., :-1] == 0], axis=-1)
    bins = (known & free_before).sum((1, 2)).astype(np.float64)
    w = 1.0 / np.maximum(np.bincount(local, bins, minlength=n_drawn), 1.0)[local]
    if observed is None:
        return w.astype(np.float32), None
    obs = observed.sum(1).astype(np.float64)
    wf = 1.0 / np.maximum(np.bincount(local, obs, minlength=n_drawn), 1.0)[local]
    return w.astype(np.float32), wf.astype(np.float32)


def weighted_hazard_loss(logits, y, weight, forecast=None):
    """Sum over rows of ``weight`` x the row's hazard cross-entropy summed over its observed bins, plus
    the auxiliary forecast ``(forecast_weight, pred, value, observed, row_weight)`` likewise; and the
    rows' plain hazard loss sum and observed bins (for the epoch's report)."""
    mask, target = _mask_and_target(y)
    cell = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * mask
    loss = (cell.sum((1, 2)) * weight).sum()
    if forecast is not None:
        fw, pred, value, observed, wf = forecast
        loss = loss + fw * ((((pred - value) ** 2) * observed).sum(1) * wf).sum()
    return loss, float(cell.detach().sum()), float(mask.sum())


def train_private(model, train, y_train, tune, y_tune, row_subject, say) -> None:
    """Train ``model.net_`` (a :class:`SequenceRiskModel`'s, freshly made) by subject-level DP-SGD, early-stopped
    on the tuning rows' hazard loss; sets ``net_`` (without opacus' hooks), ``history_``, ``best_epoch_`` and
    ``privacy_`` (what the accountant says was spent)."""
    from ._dp_layers import dp_compatible
    from ._trainer import EarlyStopping, EpochProgress, fit_epochs

    spec = check_privacy(model.privacy, type(model).__name__)
    model.net_ = dp_compatible(model.net_)  # layers whose per-row gradients opacus knows (nn.GRU -> DPGRU, ...)
    dp = SubjectDPSGD(
        model.net_,
        spec,
        row_subject,
        epochs=model.max_epochs,
        lr=model.lr,
        weight_decay=model.weight_decay,
        seed=model.random_state,
    )
    say(
        f"private training: {dp.n_subjects:,} subjects, sampling rate {dp.sample_rate:.4f}, noise multiplier "
        f"{dp.noise_multiplier:.3f}, clip {spec['max_grad_norm']} per subject, target epsilon {spec['epsilon']} "
        f"at delta {spec['delta']:g}"
    )
    aux = getattr(model, "_forecast", None)
    drop = np.random.default_rng(model.random_state)

    def train_epoch(epoch):
        tally = [0.0, 0.0]
        for rows, local, n_drawn in dp.epoch():
            dp.step(_chunks(model, train, y_train, aux, rows, local, n_drawn, drop, tally), n_drawn)
        return tally[0] / max(tally[1], 1.0)

    stopper = EarlyStopping(model.patience, say=say, what=type(model).__name__)
    model.history_ = fit_epochs(
        model.net_,
        train_epoch,
        lambda: model._eval_loss(tune, y_tune),
        max_epochs=model.max_epochs,
        callbacks=[EpochProgress(say), stopper],
    )
    model.net_ = dp.finish()
    model.best_epoch_ = stopper.best_epoch
    model._forecast = None
    model.privacy_ = dp.report()
    say(
        f"private training: epsilon {model.privacy_['epsilon']:.3f} spent at delta {spec['delta']:g} "
        f"over {model.privacy_['steps']} steps (target {spec['epsilon']})"
    )


def _chunks(model, train, y_train, aux, rows, local, n_drawn, drop, tally):
    """A step's rows in length-grouped chunks of ``batch_size`` (little padding), each as ``(loss_of,
    local)`` for :meth:`SubjectDPSGD.step`; ``tally`` adds up the plain hazard loss for the epoch's report."""
    w, wf = row_weights(y_train[rows], local, n_drawn, None if aux is None else aux[1][rows])

    def chunk(i):
        batch = train.batch(rows[i])
        if model.event_dropout:
            model._drop_events(batch, drop)

        def loss_of():
            r = model.net_.represent(**model._net_inputs(batch))  # opacus' hooks sit on its layers
            fc = None
            if aux is not None:
                value, observed = (torch.from_numpy(a[rows[i]]) for a in aux)
                fc = (model.forecast_weight, model.net_.forecast(r), value, observed, torch.from_numpy(wf[i]))
            loss, cell_sum, bins = weighted_hazard_loss(
                model.net_.head(r), torch.from_numpy(y_train[rows[i]]), torch.from_numpy(w[i]), fc
            )
            tally[0], tally[1] = tally[0] + cell_sum, tally[1] + bins
            return loss

        return loss_of, local[i]

    return [chunk(i) for i in model._batches(train.lengths[rows], batch_size=model.batch_size)]
