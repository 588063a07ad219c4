import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr

from affectfuse.labels import ERI_EMOTIONS
from affectfuse.metrics.regression import eri_metrics, mean_pearson, pearson_per_column


def test_equals_scipy_pearsonr():
    rng = np.random.default_rng(0)
    y = rng.random((50, 7))
    p = 0.5 * y + rng.random((50, 7)) * np.linspace(0.1, 2, 7)
    r = pearson_per_column(y, p)
    expected = [pearsonr(y[:, k], p[:, k])[0] for k in range(7)]
    np.testing.assert_allclose(r, expected, rtol=1e-10, atol=1e-12)
    assert mean_pearson(y, p) == pytest.approx(np.mean(expected), abs=1e-12)
    m = eri_metrics(y.astype(np.float32), p.astype(np.float32))
    assert list(m["pearson"]) == list(ERI_EMOTIONS)
    assert m["pearson"]["Empathic-Pain"] == pytest.approx(expected[4], abs=1e-6)
    assert m["mean_pearson"] == pytest.approx(np.mean(expected), abs=1e-6)


def test_constant_column_scores_zero_with_a_warning():
    rng = np.random.default_rng(1)
    y = rng.random((20, 7))
    p = y.copy()
    p[:, 3] = 0.42  # a model that always predicts the same Disgust
    with pytest.warns(RuntimeWarning, match="'Disgust' is undefined \\(constant predictions\\)"):
        r = pearson_per_column(y, p)
    assert r[3] == 0.0 and not np.isnan(r).any()
    np.testing.assert_allclose(np.delete(r, 3), 1.0)
    p[:, 3] = y[:, 3]
    y[:, 0] = 1.0
    with pytest.warns(RuntimeWarning, match="'Adoration' is undefined \\(constant labels\\)"):
        m = eri_metrics(y, p)
    assert m["pearson"]["Adoration"] == 0.0 and np.isfinite(m["mean_pearson"])


def test_no_warning_when_defined_and_errors_on_bad_input():
    y = np.arange(10.0)[:, None] * [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = pearson_per_column(y, -y, label_names=["a", "b"])
    np.testing.assert_allclose(r, -1.0)
    with pytest.raises(ValueError, match="must both be"):
        pearson_per_column(np.zeros((5, 7)), np.zeros((5, 6)))
    with pytest.raises(ValueError, match="NaN"):
        pearson_per_column(np.full((3, 1), np.nan), np.ones((3, 1)))
    with pytest.raises(ValueError, match="at least 2"):
        pearson_per_column(np.ones((1, 7)), np.ones((1, 7)))
