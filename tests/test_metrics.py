"""Metrics against values computed by hand on small arrays, and against brute force."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.evaluation import metrics as M

# Six items, three classes. Hand-worked below:
#   predicted = [0, 1, 1, 2, 0, 2]; correct = [T, F, T, T, F, T] -> accuracy 4/6
#   confusion (rows true): [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
#   precision = [1/2, 1/2, 2/2], recall = [1/2, 1/1, 2/3], f1 = [1/2, 2/3, 4/5]
#   true-class rank = [0, 1, 0, 0, 2, 0] -> top-2 accuracy 5/6
Y = np.array([0, 0, 1, 2, 2, 2])
P = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.2, 0.6],
        [0.55, 0.37, 0.08],
        [0.1, 0.3, 0.6],
    ],
    dtype=np.float32,
)
CLASSES = ["zero", "one", "two"]


def test_confusion_matrix_and_per_class_scores_by_hand():
    cm = M.confusion_matrix(Y, M.predict(P), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    scores = M.per_class_scores(cm)
    np.testing.assert_allclose(scores["precision"], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(scores["recall"], [0.5, 1.0, 2 / 3])
    np.testing.assert_allclose(scores["f1"], [0.5, 2 / 3, 0.8])
    assert scores["support"].tolist() == [2, 1, 3]


def test_score_predictions_by_hand():
    m = M.score_predictions(Y, P, classes=CLASSES, ece_bins=4)
    assert m["classes"] == CLASSES
    assert m["test_accuracy"] == pytest.approx(4 / 6)
    assert m["n_test"] == 6
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["per_class"]["two"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 3 * 0.8) / 6)
    p_true = [0.7, 0.3, 0.8, 0.6, 0.08, 0.6]
    assert m["log_loss"] == pytest.approx(-sum(math.log(p) for p in p_true) / 6, rel=1e-6)
    assert m["top2_accuracy"] == pytest.approx(5 / 6)
    # Bins of width 1/4. Confidences 0.7 0.6 0.6 0.55 0.6 (3 of 5 right) fall in (0.5, 0.75]:
    # accuracy 0.6, mean confidence 0.61; 0.8 (right) alone in (0.75, 1].
    assert m["ece"] == {"value": pytest.approx(5 / 6 * 0.01 + 1 / 6 * 0.2, rel=1e-5), "bins": 4}
    assert m["errors_per_class"] == {"zero": 1, "one": 0, "two": 1}
    assert m["top_confusions"] == [
        {"true": "zero", "predicted": "one", "count": 1},
        {"true": "two", "predicted": "zero", "count": 1},
    ]
    lo, hi = m["test_accuracy_ci95"]
    assert 0 <= lo <= m["test_accuracy"] <= hi <= 1


def _plain(value):
    """True when `value` holds only JSON's own Python types (no numpy scalars)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in (int, float, str, bool)


def test_score_predictions_is_plain_json_and_deterministic():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 500)
    proba = rng.dirichlet(np.ones(10), 500).astype(np.float32)
    first = M.score_predictions(y, proba, classes=[f"c{i}" for i in range(10)])
    second = M.score_predictions(y, proba, classes=[f"c{i}" for i in range(10)])
    assert _plain(first)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert {"test_accuracy", "per_class", "confusion_matrix", "macro_f1", "weighted_f1", "log_loss",
            "top2_accuracy", "ece", "errors_per_class", "test_accuracy_ci95", "n_test"} <= set(first)


def test_ties_predict_the_lowest_index_and_rank_consistently():
    proba = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4]], dtype=np.float32)
    y = np.array([1, 2])
    assert M.predict(proba).tolist() == [0, 1]
    assert M.true_class_rank(y, proba).tolist() == [1, 1]
    assert M.top_k_accuracy(y, proba, 1) == 0.0
    assert M.top_k_accuracy(y, proba, 2) == 1.0


def test_log_loss_is_finite_for_a_zero_probability():
    proba = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    loss = M.log_loss(np.array([1, 1]), proba)
    assert loss == pytest.approx(-math.log(np.finfo(np.float32).eps) / 2)


def test_calibration_bins_put_edges_in_the_bin_they_close():
    # 0.5 and 0.25 are exact in binary, so they sit exactly on edges of 4 bins.
    proba = np.array([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [0.4, 0.3, 0.3]])
    bins = M.calibration_bins(np.array([0, 0, 1]), proba, 4)
    assert bins["count"].tolist() == [0, 2, 0, 1]
    assert bins["accuracy"].tolist() == [0.0, 0.5, 0.0, 1.0]
    np.testing.assert_allclose(bins["confidence"], [0.0, 0.45, 0.0, 1.0])


def test_perfect_and_uniform_predictions():
    y = np.arange(10)
    m = M.score_predictions(y, np.eye(10, dtype=np.float32), classes=[str(i) for i in range(10)])
    assert m["test_accuracy"] == 1.0 and m["test_accuracy_ci95"] == [1.0, 1.0]
    assert m["ece"]["value"] == 0.0 and m["log_loss"] == pytest.approx(0.0, abs=1e-6)
    uniform = np.full((10, 10), 0.1, dtype=np.float32)
    assert M.log_loss(y, uniform) == pytest.approx(math.log(10), rel=1e-6)


def _index_bootstrap(values, n_boot, rng):
    idx = rng.integers(0, len(values), (n_boot, len(values)))
    return np.quantile(values[idx].mean(axis=1), [0.025, 0.975])


def test_bootstrap_ci_matches_resampling_indices():
    # The binomial shortcut must give the same interval as the textbook bootstrap.
    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.8
    lo, hi = M.bootstrap_accuracy_ci(correct, n_bootstrap=20000, seed=3)
    ref_lo, ref_hi = _index_bootstrap(correct.astype(float), 20000, rng)
    assert lo == pytest.approx(ref_lo, abs=0.006) and hi == pytest.approx(ref_hi, abs=0.006)
    assert M.bootstrap_accuracy_ci(correct, seed=5) == M.bootstrap_accuracy_ci(correct, seed=5)


def test_bootstrap_ci_width_matches_the_normal_approximation():
    correct = np.arange(10_000) % 10 != 0  # accuracy 0.9
    lo, hi = M.bootstrap_accuracy_ci(correct)
    half = 1.96 * math.sqrt(0.9 * 0.1 / 10_000)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert lo < 0.9 < hi


def test_paired_difference_ci_matches_resampling_indices():
    rng = np.random.default_rng(2)
    a = rng.random(500) < 0.85
    b = np.where(rng.random(500) < 0.9, a, ~a)
    lo, hi = M.paired_difference_ci(a, b, n_bootstrap=20000, seed=0)
    ref = _index_bootstrap(a.astype(float) - b.astype(float), 20000, rng)
    assert lo == pytest.approx(ref[0], abs=0.006) and hi == pytest.approx(ref[1], abs=0.006)
    assert M.paired_difference_ci(a, a) == [0.0, 0.0]


def test_top_confusions_orders_by_count_then_cell():
    cm = np.array([[5, 2, 3], [3, 5, 0], [0, 1, 5]])
    assert M.top_confusions(cm, 3) == [(0, 2, 3), (1, 0, 3), (0, 1, 2)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(2, 6), seed=st.integers(0, 2**31 - 1))
def test_properties_on_random_inputs(n, k, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    # Rounded probabilities make ties common, which is where ranking bugs live.
    proba = np.round(rng.dirichlet(np.ones(k), n), 1).astype(np.float32)
    m = M.score_predictions(y, proba, classes=[str(i) for i in range(k)], n_bootstrap=50)
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == n and np.trace(cm) / n == pytest.approx(m["test_accuracy"])
    assert M.top_k_accuracy(y, proba, 1) == pytest.approx(m["test_accuracy"])
    assert m["test_accuracy"] <= m["top2_accuracy"] <= 1
    assert M.top_k_accuracy(y, proba, k) == 1.0
    assert 0 <= m["ece"]["value"] <= 1 and m["log_loss"] >= 0
    assert sum(m["errors_per_class"].values()) == n - np.trace(cm)
    brute = [sorted(range(k), key=lambda j: (-proba[i, j], j)).index(y[i]) for i in range(n)]
    assert M.true_class_rank(y, proba).tolist() == brute


def test_score_predictions_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="shape"):
        M.score_predictions(Y[:5], P, classes=CLASSES)
    with pytest.raises(ValueError, match="classes"):
        M.score_predictions(Y, P, classes=["a", "b"])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        M.score_predictions(np.array([0, 0, 1, 2, 2, 3]), P, classes=CLASSES)
    with pytest.raises(ValueError, match="NaN"):
        M.score_predictions(Y, np.where(P > 0.5, np.nan, P), classes=CLASSES)


def test_predictions_table_schema_and_parquet_round_trip(tmp_path):
    table = M.predictions_table(np.arange(100, 106), Y, P)
    assert table.column_names == ["id", "label", "predicted", "prob_0", "prob_1", "prob_2"]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("prob_0").type == pa.float32()
    assert table["predicted"].to_pylist() == [0, 1, 1, 2, 0, 2]
    pq.write_table(table, tmp_path / "p.parquet")
    back = M.read_predictions(pq.read_table(tmp_path / "p.parquet"))
    assert back["id"].tolist() == list(range(100, 106))
    np.testing.assert_array_equal(back["proba"], P)
    from_dict = M.read_predictions({name: table[name].to_numpy() for name in table.column_names})
    np.testing.assert_array_equal(from_dict["label"], Y)


def test_read_predictions_names_the_source_and_missing_columns():
    table = M.predictions_table(np.arange(6), Y, P).drop_columns(["predicted"])
    with pytest.raises(TableSchemaError, match=r"run1\.parquet.*'predicted'"):
        M.read_predictions(table, source="run1.parquet")


def test_a_class_without_test_images_is_absent_and_left_out_of_macro_f1():
    # Class "one" never occurs: its scores are not zeros to average but absent.
    y = np.array([0, 0, 2, 2])
    proba = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7]], dtype=np.float32)
    result = M.score_predictions(y, proba, classes=CLASSES, n_bootstrap=10)
    assert result["absent_classes"] == ["one"]
    assert result["per_class"]["one"] == {"absent": True, "precision": None, "recall": None, "f1": None, "support": 0}
    assert result["macro_f1"] == 1.0 and result["test_accuracy"] == 1.0
    assert np.array(result["confusion_matrix"]).shape == (3, 3)
    assert M.score_predictions(Y, P, classes=CLASSES, n_bootstrap=10)["absent_classes"] == []
