"""Classification scores equal scikit-learn's (macro F1 over all 8 classes, -1 excluded)."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from affectfuse.metrics.classification import classification_scores, expr_macro_f1, format_scores

pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes")


@pytest.mark.parametrize("seed", range(5))
def test_scores_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 500
    y = rng.integers(-1, 6, n)  # classes 6 and 7 absent from the labels
    pred = np.where(rng.random(n) < 0.6, np.clip(y, 0, 7), rng.integers(0, 8, n))
    keep = y != -1
    s = classification_scores(y, pred)
    ref = f1_score(y[keep], pred[keep], labels=range(8), average="macro", zero_division=0)
    assert s["macro_f1"] == pytest.approx(ref, abs=1e-12)
    assert expr_macro_f1(y, pred) == pytest.approx(ref, abs=1e-12)
    per = f1_score(y[keep], pred[keep], labels=range(8), average=None, zero_division=0)
    assert [s["per_class"][c]["f1"] for c in s["class_names"]] == pytest.approx(per.tolist())
    assert s["uar"] == pytest.approx(balanced_accuracy_score(y[keep], pred[keep]))
    assert s["accuracy"] == pytest.approx(accuracy_score(y[keep], pred[keep]))
    assert s["confusion"] == confusion_matrix(y[keep], pred[keep], labels=range(8)).tolist()
    assert s["n"] == keep.sum() and s["class_names"][7] == "Other"


def test_absent_class_counts_as_zero():
    y = np.array([0, 0, 1, 1])
    s = classification_scores(y, y)  # perfect on 2 classes, 6 absent ones count 0
    assert s["macro_f1"] == pytest.approx(2 / 8)
    s3 = classification_scores(y, y, class_names=["a", "b"])
    assert s3["macro_f1"] == 1.0 and "macro F1 1.0000" in format_scores(s3)


def test_bad_values_rejected():
    with pytest.raises(ValueError, match="outside"):
        classification_scores([0, 9], [0, 1])
    with pytest.raises(ValueError, match="predictions"):
        classification_scores([0, 1], [0])
