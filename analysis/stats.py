"""The paired test behind the table's dagger: is RiSe's gain over ERM more than seed noise?

Test: exact one-sided sign-flip permutation test on the paired gains d_i (ERM minus RiSe for
HTER, RiSe minus ERM for AUC and TPR, so that a positive gain is an improvement). Under the null
hypothesis (no effect) each d_i is as likely to be +|d_i| as -|d_i|; the p-value is the
fraction of the 2^n sign patterns whose mean gain is at least the observed one (the observed
pattern included). Exact enumeration up to n = 20 pairs; beyond, 200,000 random patterns with a
fixed seed (Monte Carlo, same definition). No normality assumption, which three seeds could
never check.

Its honest limit: with n pairs the smallest attainable p is 1/2^n, so with 3 seeds (8 patterns,
p >= 0.125) no single-protocol gain can be significant at 0.05; the Avg column pairs every
(seed, protocol), 12 pairs for 4 protocols x 3 seeds (p >= 1/4096). The paired t statistic
mean(d) / (sd(d) / sqrt(n)) is reported beside it for readers used to it, not used for the mark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
EXACT_MAX_PAIRS = 20
MONTE_CARLO_DRAWS = 200_000


@dataclass
class PairedTest:
    n: int
    mean_gain: float
    t: float
    p: float

    @property
    def significant(self) -> bool:
        return self.n > 0 and self.p < ALPHA


def sign_flip_p(gains: np.ndarray) -> float:
    """One-sided p of the mean gain under random sign flips (exact up to EXACT_MAX_PAIRS)."""
    d = np.asarray(gains, float)
    n = len(d)
    if n == 0:
        return float("nan")
    observed = d.mean()
    if n <= EXACT_MAX_PAIRS:
        patterns = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # every sign pattern once
        signs = 1 - 2 * patterns
    else:
        signs = np.random.default_rng(0).choice([-1, 1], size=(MONTE_CARLO_DRAWS, n))
    means = (signs * np.abs(d)).mean(axis=1)
    # A tolerance so that a pattern equal to the observed one in exact arithmetic counts as >=.
    return float(np.mean(means >= observed - 1e-12 * max(1.0, abs(observed))))


def paired_test(gains) -> PairedTest:
    d = np.asarray(gains, float)
    n = len(d)
    if n == 0:
        return PairedTest(0, float("nan"), float("nan"), float("nan"))
    sd = d.std(ddof=1) if n >= 2 else float("nan")
    if n >= 2 and sd > 0:
        t = d.mean() / (sd / np.sqrt(n))
    else:
        t = float("nan")
    return PairedTest(n, float(d.mean()), float(t), sign_flip_p(d))
