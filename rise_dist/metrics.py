"""Face anti-spoofing metrics: HTER, AUC, TPR@FPR=1%, APCER, BPCER and the threshold used.

Conventions (shared by the training loop, Tune and the analysis tables):

* A score is P(live): higher means more live. Label 1 = live (bona fide), 0 = spoof (attack).
* A sample is accepted as live when ``score >= threshold``; a score equal to the threshold is live.
* APCER (= FAR) = spoofs accepted / spoofs; BPCER (= FRR) = lives rejected / lives;
  HTER = (APCER + BPCER) / 2. Every metric is a fraction in [0, 1], never a percentage.
* Threshold rules (``THRESHOLD_RULES``): ``test_eer`` picks the EER threshold of the scores being
  evaluated (the lineage's convention: SSDG and DADM take the ROC point where FPR and FNR = 1 - TPR
  are closest); ``val_threshold`` applies a threshold fixed beforehand on source validation data
  (the honest rule). ``evaluate`` does the first when ``threshold`` is None, the second otherwise.
* EER threshold (``eer_threshold``): the candidates are the unique scores plus +inf, which between
  them reach every operating point the ``>=`` rule can produce. The chosen one minimises
  |APCER - BPCER|; ties go to the lowest HTER, then to the lowest threshold. HTER is then the
  HTER at that threshold, a real operating point rather than an interpolated EER. Comparisons use
  exact integer arithmetic on the error counts, so the choice does not hinge on float rounding.
  (+inf never wins: it ties at best with the lowest score, and the lowest threshold is preferred.)
* TPR at FPR = 1%: the best live acceptance (1 - BPCER) over all thresholds whose APCER <= 0.01,
  whatever threshold ``evaluate`` was given.
* AUC: the Mann-Whitney probability that a random live scores above a random spoof, ties counted
  1/2, from the sorted tie groups (midrank rank-sum), O(n log n).
* With ``video_ids``, frame scores are averaged per video first and every metric is over videos.

numpy only: the analysis package imports this and must not pull in torch, sklearn or Ray.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

HTER = "hter"
AUC = "auc"
TPR_AT_FPR_1PCT = "tpr_at_fpr_1pct"
THRESHOLD = "threshold"
APCER = "apcer"
BPCER = "bpcer"
METRICS: tuple[str, ...] = (HTER, AUC, TPR_AT_FPR_1PCT, APCER, BPCER, THRESHOLD)

TEST_EER = "test_eer"
VAL_THRESHOLD = "val_threshold"
THRESHOLD_RULES: tuple[str, ...] = (TEST_EER, VAL_THRESHOLD)

SOURCE_VAL = "source_val"
ORACLE = "oracle"
SELECTION_RULES: tuple[str, ...] = (SOURCE_VAL, ORACLE)

# TPR@FPR=1% admits a threshold when spoofs_accepted / spoofs <= 1 / _FPR_DENOMINATOR, tested
# as integers so that e.g. exactly 1 of 100 spoofs accepted is admitted regardless of rounding.
_FPR_DENOMINATOR = 100


def _validate(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and a boolean live mask, or ValueError saying what is wrong."""
    s = np.asarray(scores)
    lab = np.asarray(labels)
    if s.ndim != 1 or lab.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D; got shapes {s.shape} and {lab.shape}")
    if len(s) != len(lab):
        raise ValueError(f"scores and labels differ in length: {len(s)} vs {len(lab)}")
    if len(s) == 0:
        raise ValueError("empty input: no scores to evaluate")
    if s.dtype.kind not in "biuf":
        raise ValueError(f"scores must be numeric; got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"{int(bad.sum())} non-finite score(s) (NaN or inf); "
                         f"first at index {first}: {s[first]}")
    if lab.dtype.kind not in "biuf":
        raise ValueError(f"labels must be 0 (spoof) or 1 (live); got dtype {lab.dtype}")
    is_live = lab == 1
    other = ~(is_live | (lab == 0))  # NaN labels land here too
    if other.any():
        first = int(np.argmax(other))
        raise ValueError(f"labels must be 0 (spoof) or 1 (live); {int(other.sum())} other "
                         f"value(s), first at index {first}: {lab[first]!r}")
    return s, is_live


def _per_video(scores: np.ndarray, is_live: np.ndarray,
               video_ids: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean score and label per video; ValueError if a video mixes live and spoof frames."""
    vids = np.asarray(video_ids)
    if vids.shape != scores.shape:
        raise ValueError(f"video_ids must match scores: shape {vids.shape} vs {scores.shape}")
    uniq, inv = np.unique(vids, return_inverse=True)
    inv = inv.reshape(-1)
    frames = np.bincount(inv, minlength=len(uniq))
    lives = np.bincount(inv, weights=is_live, minlength=len(uniq))
    mixed = (lives > 0) & (lives < frames)
    if mixed.any():
        first = int(np.argmax(mixed))
        vid = uniq[first]
        vid = vid.item() if isinstance(vid, np.generic) else vid  # 'clip2', not np.str_('clip2')
        raise ValueError(f"video {vid!r} has both live and spoof labels "
                         f"({int(lives[first])} live of {int(frames[first])} frames); "
                         f"{int(mixed.sum())} such video(s)")
    return np.bincount(inv, weights=scores, minlength=len(uniq)) / frames, lives > 0


class _Curve:
    """Error counts at every candidate threshold (unique scores ascending, then +inf)."""

    def __init__(self, scores: np.ndarray, is_live: np.ndarray) -> None:
        self.n_live = int(is_live.sum())
        self.n_spoof = len(is_live) - self.n_live
        if self.n_live == 0 or self.n_spoof == 0:
            missing, present = ("live", "spoof") if self.n_live == 0 else ("spoof", "live")
            raise ValueError(f"one-class input: no {missing} samples (label "
                             f"{1 if missing == 'live' else 0}), only {len(is_live)} {present}; "
                             "HTER and AUC need both classes")
        uniq, inv = np.unique(scores, return_inverse=True)
        inv = inv.reshape(-1)
        live_at = np.bincount(inv[is_live], minlength=len(uniq))
        spoof_at = np.bincount(inv[~is_live], minlength=len(uniq))
        zero = np.zeros(1, dtype=np.int64)
        # At candidate uniq[j] the samples strictly below it are rejected, those at or above
        # accepted; the final +inf candidate rejects everything.
        spoof_below = np.concatenate([zero, np.cumsum(spoof_at)])
        self.thresholds = np.append(uniq, np.inf)
        self.false_reject = np.concatenate([zero, np.cumsum(live_at)])  # lives with score < t
        self.false_accept = self.n_spoof - spoof_below  # spoofs with score >= t
        # Mann-Whitney: each live beats the spoofs strictly below its score and ties with the
        # spoofs at its score (counted 1/2); doubled to stay in integers.
        self.twice_u = int(np.dot(live_at, 2 * spoof_below[:-1] + spoof_at))

    def eer_index(self) -> int:
        """Candidate index of the EER threshold (see the module docstring for the rule)."""
        # Scaled by n_live * n_spoof: |APCER - BPCER| and 2 * HTER as exact integers.
        fa = self.false_accept * self.n_live
        fr = self.false_reject * self.n_spoof
        gap = np.abs(fa - fr)
        total = fa + fr
        # argmin returns the first minimum, i.e. the lowest threshold among remaining ties.
        total = np.where(gap == gap.min(), total, np.iinfo(np.int64).max)
        return int(np.argmin(total))

    def tpr_at_fpr_1pct(self) -> float:
        admitted = self.false_accept * _FPR_DENOMINATOR <= self.n_spoof  # +inf always admitted
        return (self.n_live - int(self.false_reject[admitted].min())) / self.n_live

    def auc(self) -> float:
        return self.twice_u / (2 * self.n_live * self.n_spoof)


def _prepare(scores: ArrayLike, labels: ArrayLike,
             video_ids: ArrayLike | Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    s, is_live = _validate(scores, labels)
    if video_ids is not None:
        s, is_live = _per_video(s, is_live, video_ids)
    return s, is_live


def eer_threshold(scores: ArrayLike, labels: ArrayLike,
                  video_ids: ArrayLike | Sequence | None = None) -> float:
    """The EER threshold of these scores: among the unique scores (and +inf), the one minimising
    |APCER - BPCER| under the ``>=`` rule; ties to the lowest HTER, then the lowest threshold.

    With ``video_ids`` the scores are averaged per video first. Raises ValueError on invalid or
    one-class input, as ``evaluate`` does.
    """
    curve = _Curve(*_prepare(scores, labels, video_ids))
    return float(curve.thresholds[curve.eer_index()])


def evaluate(scores: ArrayLike, labels: ArrayLike, threshold: float | None = None,
             video_ids: ArrayLike | Sequence | None = None) -> dict[str, float]:
    """HTER, AUC, TPR@FPR=1%, APCER, BPCER and the threshold used, keyed by the metric constants.

    ``scores`` are P(live), ``labels`` 1 = live / 0 = spoof. With ``threshold=None`` the EER
    threshold of these scores is used (rule ``test_eer``); otherwise ``threshold`` is applied
    as-is (rule ``val_threshold``), a sample being live when ``score >= threshold``. AUC and
    TPR@FPR=1% do not depend on the threshold. With ``video_ids`` (one per score) the scores are
    averaged per video and every metric is over videos; labels must be constant within a video.
    All values are fractions in [0, 1] except the threshold, which is in the scores' units.

    Raises ValueError for mismatched lengths, empty input, labels other than 0/1, non-finite
    scores, a NaN threshold, a video with mixed labels, or input lacking one of the two classes.
    """
    curve = _Curve(*_prepare(scores, labels, video_ids))
    if threshold is None:
        i = curve.eer_index()
        t = float(curve.thresholds[i])
        fa, fr = int(curve.false_accept[i]), int(curve.false_reject[i])
    else:
        t = float(threshold)
        if np.isnan(t):
            raise ValueError("threshold is NaN")
        # Candidates ascending: the first one >= t accepts exactly the samples with score >= t.
        i = int(np.searchsorted(curve.thresholds, t, side="left"))
        fa, fr = int(curve.false_accept[i]), int(curve.false_reject[i])
    n_live, n_spoof = curve.n_live, curve.n_spoof
    return {
        # HTER as one exact fraction, correctly rounded, rather than the sum of two rounded ones.
        HTER: (fa * n_live + fr * n_spoof) / (2 * n_live * n_spoof),
        AUC: curve.auc(),
        TPR_AT_FPR_1PCT: curve.tpr_at_fpr_1pct(),
        APCER: fa / n_spoof,
        BPCER: fr / n_live,
        THRESHOLD: t,
    }
