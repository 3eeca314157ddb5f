"""The simulated patient process, vectorised over subjects.

Time runs in steps of one twelfth of a 365-day year. At each step, for all subjects at once:

1. the untreated latent state is ``mu + slope * (age - 50) / 10 + random walk`` (5 components,
   SD units); the treated state adds each active treatment's known effect;
2. outcome hazards (per year) are log-linear in the treated state, age, sex and deprivation;
   every outcome has an exponential clock inside the step, death competes with all of them, so
   event times are continuous and the cumulative incidence has a closed form (``_truth``);
3. an outpatient visit happens with a probability that rises with sickness (informative
   observation); at a visit vitals and some labs are read with noise, diagnoses are coded the
   first time a reading crosses its threshold, and a confounded policy may start treatments
   that act from the next step on.

Nothing loops over subjects; the only Python loop is over time steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._codes import COMPONENTS, OUTCOMES, RACE_GROUPS, RACE_PROBS, TREATMENTS

STEPS_PER_YEAR = 12
DT = 1.0 / STEPS_PER_YEAR
OUTCOME_NAMES = tuple(OUTCOMES)
TREATMENT_NAMES = tuple(TREATMENTS)
EFFECTS = np.array([TREATMENTS[t][2] for t in TREATMENT_NAMES], dtype=np.float32)  # (D, K)
G, B, L, R, W = range(len(COMPONENTS))
T2D, MI, STROKE, CKD, DEATH = range(len(OUTCOME_NAMES))
ONE_TIME = np.array([OUTCOMES[o][2] for o in OUTCOME_NAMES])


@dataclass
class Statics:
    """Per-subject traits drawn once."""

    age0: np.ndarray  # age in years at the simulation start
    male: np.ndarray  # bool
    race: np.ndarray  # index into RACE_GROUPS
    deprivation: np.ndarray  # 0 (least) .. 1 (most deprived)
    mu: np.ndarray  # (N, K) latent level at age 50
    slope: np.ndarray  # (N, K) change per decade of age
    entry: np.ndarray  # years after start when the subject enters the records
    censor: np.ndarray  # years after start when the subject is lost to follow-up
    in_bias_group: np.ndarray  # bool
    smoker: np.ndarray  # bool; raises cardiovascular hazards
    smoking_recorded: np.ndarray  # bool; only half of smokers have it coded (an unmeasured risk)


@dataclass
class EventLog:
    """Columnar event chunks collected step by step."""

    subject: list = field(default_factory=list)
    years: list = field(default_factory=list)
    code: list = field(default_factory=list)
    value: list = field(default_factory=list)
    expected: list = field(default_factory=list)  # readings: the noise-free value (NaN for other events)

    def add(self, idx, years, code, value=None, expected=None):
        if idx.size == 0:
            return
        self.subject.append(idx.astype(np.int32))
        self.years.append(np.broadcast_to(np.asarray(years, np.float64), idx.shape).copy())
        self.code.append(np.full(idx.size, code, np.int16))
        v = np.full(idx.size, np.nan, np.float32) if value is None else np.asarray(value, np.float32)
        self.value.append(v)
        self.expected.append(None if expected is None else np.asarray(expected, np.float32))

    def arrays(self):
        if not self.subject:
            return (np.empty(0, np.int32), np.empty(0), np.empty(0, np.int16), np.empty(0, np.float32))
        return tuple(np.concatenate(x) for x in (self.subject, self.years, self.code, self.value))

    def expected_values(self) -> np.ndarray:
        """The noise-free value of each event in :meth:`arrays` order (NaN where not a reading)."""
        return (
            np.concatenate(
                [np.full(s.size, np.nan, np.float32) if e is None else e for s, e in zip(self.subject, self.expected)]
            )
            if self.expected
            else np.empty(0, np.float32)
        )


def draw_statics(n, rng, *, bias_group, follow_up_loss_per_year):
    """Static traits and latent baselines, correlated the way cardiometabolic risk is."""
    age0 = rng.uniform(30.0, 80.0, n)
    male = rng.random(n) < 0.5
    race = rng.choice(len(RACE_GROUPS), n, p=RACE_PROBS)
    dep = rng.beta(2.0, 2.0, n)
    e = rng.standard_normal((n, len(COMPONENTS)))
    black, hispanic = race == RACE_GROUPS.index("Black"), race == RACE_GROUPS.index("Hispanic")
    mu = np.empty_like(e)
    mu[:, W] = e[:, W] + 0.6 * (dep - 0.5)
    mu[:, G] = 0.45 * mu[:, W] + 0.5 * (dep - 0.5) + 0.85 * e[:, G] + 0.3 * hispanic + 0.2 * black
    mu[:, B] = 0.3 * mu[:, W] + 0.9 * e[:, B] + 0.35 * black + 0.2 * male
    mu[:, L] = 0.2 * mu[:, W] + 0.95 * e[:, L] + 0.1 * male
    mu[:, R] = 0.25 * mu[:, G] + 0.2 * mu[:, B] + 0.9 * e[:, R]
    slope = np.array([0.25, 0.30, 0.10, 0.35, 0.05]) + 0.08 * rng.standard_normal(e.shape)
    entry = rng.uniform(0.0, 3.0, n)
    censor = entry + rng.exponential(1.0 / follow_up_loss_per_year, n)
    in_group = _group_mask(bias_group, male=male, race=race) if bias_group else np.zeros(n, bool)
    smoker = rng.random(n) < 0.12 + 0.2 * dep
    return Statics(age0, male, race, dep, mu, slope, entry, censor, in_group, smoker, rng.random(n) < 0.5)


def _group_mask(group_code, *, male, race):
    if group_code.startswith("RACE//") and group_code[6:] in RACE_GROUPS:
        return race == RACE_GROUPS.index(group_code[6:])
    if group_code in ("GENDER//F", "GENDER//M"):
        return male == (group_code == "GENDER//M")
    raise ValueError(
        f"simulator: 'bias_group' must be one of {['RACE//' + r for r in RACE_GROUPS] + ['GENDER//F', 'GENDER//M']}; "
        f"got {group_code!r}"
    )


def hazards(z, age, male, dep, smoker):
    """Per-year hazards of each outcome, shape ``z.shape[:-1] + (5,)``.

    ``z`` is the treated latent state (..., K); ``age``, ``male``, ``dep``, ``smoker`` broadcast to
    z[..., 0].
    """
    a = (age - 60.0) / 10.0
    g, b, l, r, w = (z[..., k] for k in range(len(COMPONENTS)))  # noqa: E741 (l: the LDL component)
    lin = np.stack(
        [
            -4.6 + 1.1 * g + 0.35 * w + 0.15 * a,
            -5.2 + 0.55 * l + 0.45 * b + 0.3 * g + 0.55 * a + 0.45 * male + 0.7 * smoker,
            -5.9 + 0.7 * b + 0.2 * g + 0.2 * l + 0.6 * a + 0.6 * smoker,
            -5.0 + 1.0 * r + 0.3 * g + 0.3 * b + 0.35 * a,
            -5.7 + 0.9 * a + 0.2 * g + 0.25 * b + 0.3 * r + 0.3 * male + 0.4 * (dep - 0.5) + 0.4 * smoker,
        ],
        axis=-1,
    )
    return np.exp(lin).astype(np.float32)


READING_NOISE_SD = {"sbp": 12.0, "dbp": 7.0, "bmi": 0.6, "hba1c": 0.2, "glucose": 15.0, "ldl": 15.0, "egfr": 6.0}


def expected_readings(z, age):
    """The noise-free lab/vital readings of the treated latent state (the trajectory oracle)."""
    g, b, l, r, w = (z[:, k] for k in range(len(COMPONENTS)))  # noqa: E741 (l: the LDL component)
    return {
        "sbp": 128.0 + 14.0 * b,
        "dbp": 78.0 + 8.0 * b,
        "bmi": 27.5 + 4.5 * w,
        "hba1c": 5.45 + 0.45 * g,
        "glucose": 98.0 + 14.0 * g,
        "ldl": 118.0 + 30.0 * l,
        "egfr": np.clip(92.0 - 13.0 * r - 0.5 * (age - 50.0), 5.0, 140.0),
    }


def readings(z, age, rng, expected=None):
    """Noisy lab/vital readings of the treated latent state, one array per MEASUREMENTS key: the
    :func:`expected_readings` plus independent Gaussian noise (``READING_NOISE_SD``); eGFR is clipped
    to [5, 140] after the noise."""
    mean = expected_readings(z, age) if expected is None else expected
    noise = rng.standard_normal((z.shape[0], 7))
    out = {name: mean[name] + READING_NOISE_SD[name] * noise[:, k] for k, name in enumerate(READING_NOISE_SD)}
    out["egfr"] = np.clip(92.0 - 13.0 * z[:, 3] - 0.5 * (age - 50.0) + 6.0 * noise[:, 6], 5.0, 140.0)
    return out
