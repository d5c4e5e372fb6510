"""analysis.stats: the exact sign-flip test and the paired t statistic."""

import numpy as np
import pytest

from analysis.stats import paired_test, sign_flip_p


def test_exact_p_values():
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(1 / 8)  # only the observed pattern
    assert sign_flip_p(np.ones(6)) == pytest.approx(1 / 64)
    assert sign_flip_p([-1.0, -1.0]) == pytest.approx(1.0)  # a loss is never a significant gain
    # d = (3, -1): patterns' means 1, -2, 2, -1; >= 1: two of four
    assert sign_flip_p([3.0, -1.0]) == pytest.approx(0.5)
    assert np.isnan(sign_flip_p([]))


def test_monte_carlo_beyond_exact_range():
    p = sign_flip_p(np.ones(25))
    assert p < 1e-3


def test_paired_t_and_significance():
    t = paired_test([1.0, 2.0, 3.0, 4.0, 5.0])
    assert t.n == 5 and t.mean_gain == pytest.approx(3.0)
    assert t.t == pytest.approx(3.0 / (np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)))
    assert t.p == pytest.approx(1 / 32) and t.significant
    assert not paired_test([1.0, 1.0, 1.0]).significant  # p = 1/8
    assert not paired_test([]).significant
