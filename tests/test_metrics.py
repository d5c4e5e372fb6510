"""Tests for rise_dist.metrics: hand-worked cases, ties, validation, and a brute-force reference."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest

from rise_dist import metrics
from rise_dist.metrics import (
    APCER,
    AUC,
    BPCER,
    HTER,
    METRICS,
    THRESHOLD,
    TPR_AT_FPR_1PCT,
    eer_threshold,
    evaluate,
)


def _split(lives: list[float], spoofs: list[float]) -> tuple[list[float], list[int]]:
    return list(lives) + list(spoofs), [1] * len(lives) + [0] * len(spoofs)


def reference(scores: list[float], labels: list[int], threshold: float | None = None) -> dict:
    """Brute force in exact rationals: every threshold tried, every live/spoof pair compared."""
    lives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    spoofs = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    n_live, n_spoof = len(lives), len(spoofs)

    def rates(t: float) -> tuple[Fraction, Fraction]:
        apcer = Fraction(sum(1 for s in spoofs if s >= t), n_spoof)
        bpcer = Fraction(sum(1 for s in lives if s < t), n_live)
        return apcer, bpcer

    points = [(t, *rates(t)) for t in sorted(set(scores)) + [math.inf]]
    if threshold is None:
        t, apcer, bpcer = min(points, key=lambda p: (abs(p[1] - p[2]), p[1] + p[2], p[0]))
    else:
        t = threshold
        apcer, bpcer = rates(t)
    tpr = max(1 - b for _, a, b in points if a <= Fraction(1, 100))
    wins = sum(1 for x in lives for y in spoofs if x > y)
    ties = sum(1 for x in lives for y in spoofs if x == y)
    return {
        HTER: float((apcer + bpcer) / 2),
        AUC: float(Fraction(2 * wins + ties, 2 * n_live * n_spoof)),
        TPR_AT_FPR_1PCT: float(tpr),
        APCER: float(apcer),
        BPCER: float(bpcer),
        THRESHOLD: float(t),
    }


# ---------------------------------------------------------------- constants


def test_result_keys_are_the_metric_constants() -> None:
    result = evaluate([0.9, 0.1], [1, 0])
    assert set(result) == set(METRICS)
    assert len(METRICS) == 6
    assert (HTER, AUC, TPR_AT_FPR_1PCT, THRESHOLD, APCER, BPCER) == (
        "hter", "auc", "tpr_at_fpr_1pct", "threshold", "apcer", "bpcer")


def test_rule_constants() -> None:
    assert metrics.THRESHOLD_RULES == (metrics.TEST_EER, metrics.VAL_THRESHOLD)
    assert metrics.THRESHOLD_RULES == ("test_eer", "val_threshold")
    assert metrics.SELECTION_RULES == (metrics.SOURCE_VAL, metrics.ORACLE)
    assert metrics.SELECTION_RULES == ("source_val", "oracle")


# ---------------------------------------------------------------- hand-worked cases


def test_perfect_separation() -> None:
    r = evaluate(*_split([0.9, 0.8, 0.7], [0.3, 0.2, 0.1]))
    assert r[HTER] == 0.0
    assert r[APCER] == 0.0
    assert r[BPCER] == 0.0
    assert r[AUC] == 1.0
    assert r[TPR_AT_FPR_1PCT] == 1.0
    # Lowest threshold among the zero-error ones: the lowest live score.
    assert r[THRESHOLD] == 0.7


def test_fully_inverted() -> None:
    r = evaluate(*_split([0.1, 0.2, 0.3], [0.7, 0.8, 0.9]))
    assert r[AUC] == 0.0
    # Every threshold is at least as bad as chance; the EER point is the lowest spoof score,
    # where all spoofs are accepted and all lives rejected.
    assert r[THRESHOLD] == 0.7
    assert (r[APCER], r[BPCER], r[HTER]) == (1.0, 1.0, 1.0)
    assert r[TPR_AT_FPR_1PCT] == 0.0


def test_given_threshold_hand_worked() -> None:
    # Threshold 0.5: spoofs 0.5 and 0.7 accepted (2/3); live 0.4 rejected (1/4).
    scores, labels = _split([0.9, 0.6, 0.5, 0.4], [0.1, 0.5, 0.7])
    r = evaluate(scores, labels, threshold=0.5)
    assert r[APCER] == 2 / 3
    assert r[BPCER] == 1 / 4
    assert r[HTER] == 11 / 24
    assert r[THRESHOLD] == 0.5


def test_given_threshold_is_applied_as_is_with_ge_rule() -> None:
    scores, labels = _split([0.6, 0.9], [0.2, 0.6, 0.7])
    assert eer_threshold(scores, labels) == 0.7  # so using 0.6 below is not the EER rule
    at = evaluate(scores, labels, threshold=0.6)
    assert at[THRESHOLD] == 0.6
    assert at[BPCER] == 0.0  # the live at exactly 0.6 is accepted
    assert at[APCER] == 2 / 3  # and so is the spoof at exactly 0.6
    above = evaluate(scores, labels, threshold=float(np.nextafter(0.6, 1.0)))
    assert above[BPCER] == 0.5
    assert above[APCER] == 1 / 3


def test_given_threshold_outside_score_range() -> None:
    scores, labels = _split([0.6, 0.9], [0.2, 0.4])
    high = evaluate(scores, labels, threshold=2.0)
    assert (high[APCER], high[BPCER], high[THRESHOLD]) == (0.0, 1.0, 2.0)
    low = evaluate(scores, labels, threshold=-1.0)
    assert (low[APCER], low[BPCER]) == (1.0, 0.0)


def test_given_threshold_does_not_change_auc_or_tpr() -> None:
    scores, labels = _split([0.9, 0.6, 0.5, 0.4], [0.1, 0.5, 0.7])
    free, fixed = evaluate(scores, labels), evaluate(scores, labels, threshold=0.95)
    assert free[AUC] == fixed[AUC]
    assert free[TPR_AT_FPR_1PCT] == fixed[TPR_AT_FPR_1PCT]


def test_eer_threshold_hand_worked() -> None:
    # Candidates 0.1, 0.2, 0.3, 0.7, 0.8, 0.9: at 0.7 one spoof (0.7) is accepted and one live
    # (0.3) rejected, APCER = BPCER = 1/3; every other candidate has |APCER - BPCER| = 1/3 or more.
    scores, labels = _split([0.9, 0.8, 0.3], [0.7, 0.2, 0.1])
    r = evaluate(scores, labels)
    assert r[THRESHOLD] == 0.7
    assert eer_threshold(scores, labels) == 0.7
    assert r[APCER] == 1 / 3
    assert r[BPCER] == 1 / 3
    assert r[HTER] == 1 / 3


def test_eer_tie_broken_by_lowest_hter() -> None:
    # Spoofs 0.1, 0.3; lives 0.2, 0.4, 0.5, 0.6. |APCER - BPCER| = 1/4 at both 0.3
    # (APCER 1/2, BPCER 1/4, HTER 3/8) and 0.4 (APCER 0, BPCER 1/4, HTER 1/8): 0.4 wins.
    scores, labels = _split([0.2, 0.4, 0.5, 0.6], [0.1, 0.3])
    r = evaluate(scores, labels)
    assert r[THRESHOLD] == 0.4
    assert (r[APCER], r[BPCER], r[HTER]) == (0.0, 0.25, 0.125)


def test_eer_tie_broken_by_lowest_threshold() -> None:
    # Spoofs 0.1, 0.5; lives 0.5, 0.9. At 0.5: APCER 1/2, BPCER 0; at 0.9: APCER 0, BPCER 1/2.
    # Same gap and same HTER; the lower threshold wins.
    scores, labels = _split([0.5, 0.9], [0.1, 0.5])
    r = evaluate(scores, labels)
    assert r[THRESHOLD] == 0.5
    assert (r[APCER], r[BPCER], r[HTER]) == (0.5, 0.0, 0.25)


def test_tpr_at_fpr_1pct_boundary_is_inclusive() -> None:
    lives = [0.99, 0.97, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    # 100 spoofs, one at 0.95 and 99 at 0.92: threshold 0.95 accepts exactly 1/100 spoofs,
    # allowed, and 3 of 10 lives; any threshold <= 0.92 accepts every spoof.
    spoofs = [0.95] + [0.92] * 99
    assert evaluate(*_split(lives, spoofs))[TPR_AT_FPR_1PCT] == 0.3
    # 99 spoofs: 1/99 > 1%, so the threshold must rise above 0.95, to 0.97: 2 of 10 lives.
    assert evaluate(*_split(lives, spoofs[:-1]))[TPR_AT_FPR_1PCT] == 0.2


# ---------------------------------------------------------------- ties


def test_all_scores_equal() -> None:
    r = evaluate([0.5] * 5, [1, 0, 1, 0, 0])
    assert r[AUC] == 0.5
    # Only two operating points: accept all (threshold 0.5) or reject all (+inf); they tie on
    # gap and HTER and the lower threshold wins.
    assert r[THRESHOLD] == 0.5
    assert (r[APCER], r[BPCER], r[HTER]) == (1.0, 0.0, 0.5)


def test_live_spoof_tie_counts_half() -> None:
    # Pairs (live, spoof): (0.5, 0.5) tie -> 1/2; (0.5, 0.1), (0.9, 0.5), (0.9, 0.1) wins -> 3.
    r = evaluate(*_split([0.5, 0.9], [0.5, 0.1]))
    assert r[AUC] == 3.5 / 4


def test_ties_within_a_class_do_not_matter_for_auc() -> None:
    assert evaluate(*_split([0.7, 0.7, 0.7], [0.2, 0.2]))[AUC] == 1.0


# ---------------------------------------------------------------- brute-force reference


@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 400))
    labels = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(int)
    labels[:2] = [0, 1]  # both classes present
    # Overlapping classes, rounded to 2 decimals so that ties within and across classes abound.
    scores = np.round(np.clip(rng.normal(0.45 + 0.15 * labels, 0.15), 0, 1), 2)
    s, y = scores.tolist(), labels.tolist()
    assert len(set(s)) < n  # the data really has ties

    got, want = evaluate(scores, labels), reference(s, y)
    assert got == want
    assert eer_threshold(scores, labels) == want[THRESHOLD]

    t = float(rng.choice(scores))  # a threshold equal to some scores exercises the >= rule
    assert evaluate(scores, labels, threshold=t) == reference(s, y, threshold=t)


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_reference_small_and_unbalanced(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(3, 12))
    labels = np.array([1] + [0] * (n - 1))
    rng.shuffle(labels)
    scores = rng.integers(0, 4, n) / 4
    assert evaluate(scores, labels) == reference(scores.tolist(), labels.tolist())


def test_large_input_is_fast_and_consistent() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    labels = rng.random(n) < 0.5
    scores = rng.normal(labels.astype(float), 1.0)
    start = time.perf_counter()
    r = evaluate(scores, labels)
    elapsed = time.perf_counter() - start
    # A loop over thresholds in Python would take minutes; the sort-based path takes well
    # under a second.
    assert elapsed < 10.0
    # Two unit-variance normals one apart: AUC = Phi(1 / sqrt 2) ~ 0.7602, EER = Phi(-1/2) ~ 0.3085.
    assert r[AUC] == pytest.approx(0.7602, abs=0.002)
    assert r[HTER] == pytest.approx(0.3085, abs=0.002)
    assert abs(r[APCER] - r[BPCER]) < 1e-5
    assert r[THRESHOLD] == pytest.approx(0.5, abs=0.01)


# ---------------------------------------------------------------- per-video averaging


def test_video_averaging_changes_the_result() -> None:
    # Frames: live video A at 0.9 and 0.1, spoof video B at 0.3 and 0.5. Frame AUC = 2/4;
    # video means A = 0.5, B = 0.4 separate perfectly.
    scores = [0.9, 0.1, 0.3, 0.5]
    labels = [1, 1, 0, 0]
    videos = ["A", "A", "B", "B"]
    assert evaluate(scores, labels)[AUC] == 0.5
    r = evaluate(scores, labels, video_ids=videos)
    assert r[AUC] == 1.0
    assert r[HTER] == 0.0
    assert r[THRESHOLD] == 0.5
    assert eer_threshold(scores, labels, video_ids=videos) == 0.5
    # A given threshold is applied to the video means: 0.45 accepts A (0.5), rejects B (0.4);
    # per frame it would accept the spoof frame at 0.5 and reject the live frame at 0.1.
    assert evaluate(scores, labels, threshold=0.45, video_ids=videos)[HTER] == 0.0
    assert evaluate(scores, labels, threshold=0.45)[HTER] == 0.5


def test_video_averaging_matches_reference_on_means() -> None:
    rng = np.random.default_rng(7)
    n_videos = 60
    video_label = (np.arange(n_videos) % 2).astype(int)
    videos = np.repeat(np.arange(n_videos), rng.integers(1, 6, n_videos))
    rng.shuffle(videos)
    labels = video_label[videos]
    scores = np.round(rng.random(len(videos)), 1)
    means, mean_labels = [], []
    for v in range(n_videos):
        frames = [s for s, w in zip(scores.tolist(), videos.tolist(), strict=True) if w == v]
        means.append(np.mean(frames))
        mean_labels.append(int(video_label[v]))
    got = evaluate(scores, labels, video_ids=videos)
    want = reference(means, mean_labels)
    for key in (HTER, AUC, APCER, BPCER, TPR_AT_FPR_1PCT):
        assert got[key] == want[key], key
    assert got[THRESHOLD] == pytest.approx(want[THRESHOLD], abs=1e-12)


def test_video_with_mixed_labels_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="video 'clip2'"):
        evaluate([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 1], video_ids=["clip1", "clip1", "clip2", "clip2"])


def test_video_ids_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="video_ids"):
        evaluate([0.1, 0.9], [0, 1], video_ids=["a"])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(("labels", "missing"), [([1, 1, 1], "no spoof"), ([0, 0], "no live")])
def test_one_class_input_raises_naming_missing_class(labels: list[int], missing: str) -> None:
    with pytest.raises(ValueError, match=missing):
        evaluate([0.5] * len(labels), labels)
    with pytest.raises(ValueError, match=missing):
        eer_threshold([0.5] * len(labels), labels)


def test_nan_scores_raise_with_count_and_first_index() -> None:
    with pytest.raises(ValueError, match=r"2 non-finite score\(s\).*first at index 1"):
        evaluate([0.1, float("nan"), 0.3, float("nan")], [0, 1, 0, 1])


def test_infinite_scores_raise() -> None:
    with pytest.raises(ValueError, match=r"1 non-finite.*index 0"):
        evaluate([float("inf"), 0.3], [0, 1])


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="differ in length: 3 vs 2"):
        evaluate([0.1, 0.2, 0.3], [0, 1])


def test_empty_input_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        evaluate([], [])


@pytest.mark.parametrize("bad", [[0, 2], [0, -1], [0, 0.5], [0, float("nan")]])
def test_labels_other_than_0_1_raise(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="labels must be 0 .* or 1"):
        evaluate([0.1, 0.9], bad)


def test_string_labels_raise() -> None:
    with pytest.raises(ValueError, match="labels must be 0"):
        evaluate([0.1, 0.9], ["spoof", "live"])


def test_nan_threshold_raises() -> None:
    with pytest.raises(ValueError, match="threshold is NaN"):
        evaluate([0.1, 0.9], [0, 1], threshold=float("nan"))


def test_bool_and_float_labels_accepted() -> None:
    expected = evaluate([0.1, 0.9, 0.4], [0, 1, 1])
    assert evaluate([0.1, 0.9, 0.4], [False, True, True]) == expected
    assert evaluate([0.1, 0.9, 0.4], [0.0, 1.0, 1.0]) == expected


def test_does_not_import_torch_sklearn_or_ray() -> None:
    code = ("import sys, rise_dist.metrics; "
            "bad = [m for m in ('torch', 'sklearn', 'ray') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
