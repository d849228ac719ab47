"""Evaluation metrics of a classifier from its predicted probabilities.

Every function takes `y_true` int (n,) with values in [0, k) and `proba` float (n, k) whose
rows are the model's class probabilities. Results are plain Python ints and floats so that
`json.dumps` of them is exact and the same for the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from mnist_pipeline.errors import TableSchemaError

# A probability of exactly 0 for the true class would make the log loss infinite; float32
# softmax outputs underflow to 0 for confident models, so clip at float32's resolution.
_LOG_LOSS_EPS = float(np.finfo(np.float32).eps)


def _check(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(proba)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must have shape (n, k) with k >= 2, got {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"y_true must have shape ({p.shape[0]},) to match proba, got {y.shape}")
    if y.size == 0:
        raise ValueError("cannot evaluate on 0 samples")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_true must hold integer labels, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true labels must lie in [0, {p.shape[1]}), got {y.min()}..{y.max()}")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba holds NaN or infinite values")
    return y.astype(np.int64), p


def predict(proba: np.ndarray) -> np.ndarray:
    """Predicted class (n,) int64: the most probable one, the lowest index on ties."""
    return np.argmax(proba, axis=1).astype(np.int64)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Counts (k, k) int64; rows are the true class, columns the predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * k + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=k * k).reshape(k, k)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support (k,) from a confusion matrix.

    A score whose denominator is 0 (a class never predicted, or never present) is 0, as in
    scikit-learn's zero_division=0: a class the model never predicts has earned no credit.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log probability of the true class, in nats."""
    y, p = _check(y_true, proba)
    p_true = p[np.arange(y.size), y].astype(np.float64)
    return float(-np.mean(np.log(np.clip(p_true, _LOG_LOSS_EPS, 1.0))))


def true_class_rank(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Rank (n,) int64 of the true class among the k, 0 for the most probable.

    Ties rank the lower class index first, the same rule as `predict`, so that rank 0 is
    exactly a correct prediction and top-1 accuracy equals accuracy.
    """
    y, p = _check(y_true, proba)
    p_true = p[np.arange(y.size), y][:, None]
    lower_index = np.arange(p.shape[1])[None, :] < y[:, None]
    ahead = (p > p_true) | ((p == p_true) & lower_index)
    return ahead.sum(axis=1).astype(np.int64)


def top_k_accuracy(y_true: np.ndarray, proba: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the k most probable."""
    return float(np.mean(true_class_rank(y_true, proba) < k))


def calibration_bins(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> dict:
    """Reliability statistics of the top-class confidence in `n_bins` equal-width bins.

    Bin b holds confidences in (b/n_bins, (b+1)/n_bins]. Returns arrays (n_bins,): `count`,
    `accuracy` and `confidence` (means within the bin, 0 for an empty bin) and `edges`
    (n_bins + 1,).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y, p = _check(y_true, proba)
    pred = predict(p)
    conf = p[np.arange(y.size), pred].astype(np.float64)
    correct = (pred == y).astype(np.float64)
    # ceil(conf * B) - 1 puts a confidence exactly on an edge into the bin it closes.
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    nonempty = count > 0
    acc = np.divide(np.bincount(b, correct, n_bins), count, out=np.zeros(n_bins), where=nonempty)
    mean_conf = np.divide(np.bincount(b, conf, n_bins), count, out=np.zeros(n_bins), where=nonempty)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "count": count,
        "accuracy": acc,
        "confidence": mean_conf,
    }


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """Sample-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    bins = calibration_bins(y_true, proba, n_bins)
    weights = bins["count"] / bins["count"].sum()
    return float(np.sum(weights * np.abs(bins["accuracy"] - bins["confidence"])))


def _percentile_interval(samples: np.ndarray) -> list[float]:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return [float(lo), float(hi)]


def bootstrap_accuracy_ci(correct: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0) -> list[float]:
    """Percentile-bootstrap 95% interval [lo, hi] of the mean of a boolean (n,) vector.

    The number of correct items in a resample of n items drawn with replacement is exactly
    Binomial(n, mean), so drawing that count gives the same bootstrap distribution as
    resampling indices, without materialising n_bootstrap x n indices.
    """
    correct = np.asarray(correct, dtype=bool)
    n = correct.size
    rng = np.random.default_rng(seed)
    return _percentile_interval(rng.binomial(n, correct.mean(), size=n_bootstrap) / n)


def paired_difference_ci(
    correct_a: np.ndarray, correct_b: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0
) -> list[float]:
    """Percentile-bootstrap 95% interval of accuracy(a) - accuracy(b) on the same items.

    Pairing removes the shared difficulty of the test items, so this interval is much
    narrower than comparing two separate intervals. Each item contributes -1, 0 or +1; a
    resample's counts of those three outcomes are multinomial, which is drawn directly.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired vectors differ in shape: {a.shape} vs {b.shape}")
    n = a.size
    probs = np.array([np.sum(~a & b), np.sum(a == b), np.sum(a & ~b)], dtype=np.float64) / n
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, probs, size=n_bootstrap)
    return _percentile_interval((counts[:, 2] - counts[:, 0]) / n)


def top_confusions(cm: np.ndarray, limit: int = 5) -> list[tuple[int, int, int]]:
    """The `limit` largest off-diagonal cells as (true, predicted, count), largest first.

    Ties are broken by (true, predicted) so the order is deterministic; empty cells are left out.
    """
    cm = np.asarray(cm)
    k = cm.shape[0]
    cells = [(int(cm[t, p]), t, p) for t in range(k) for p in range(k) if t != p and cm[t, p] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(t, p, count) for count, t, p in cells[:limit]]


def score_predictions(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    classes: Sequence[str],
    ece_bins: int = 15,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Metrics of the test split as a JSON-ready dict (see the module docstring for shapes).

    Keys: classes, absent_classes, test_accuracy, test_accuracy_ci95, n_test, per_class,
    confusion_matrix, macro_f1, weighted_f1, log_loss, top2_accuracy, ece {value, bins},
    errors_per_class, top_confusions.

    A class with no test image is absent: its per_class entry says `"absent": true` with null
    scores, and macro_f1 is the mean over the present classes only (an absent class has no
    F1 to average; counting it as 0 would report a perfect model as a poor one).
    """
    y, p = _check(y_true, proba)
    k = p.shape[1]
    if len(classes) != k:
        raise ValueError(f"classes has {len(classes)} names but proba has {k} columns")
    if len(set(classes)) != k:
        raise ValueError(f"class names must be unique, got {list(classes)}")
    pred = predict(p)
    correct = pred == y
    cm = confusion_matrix(y, pred, k)
    scores = per_class_scores(cm)
    support = scores["support"]
    present = support > 0
    names = [str(c) for c in classes]
    return {
        # JSON writers may sort keys, so the class order is kept as a list, not per_class's order.
        "classes": names,
        "absent_classes": [name for i, name in enumerate(names) if not present[i]],
        "test_accuracy": float(correct.mean()),
        "test_accuracy_ci95": bootstrap_accuracy_ci(correct, n_bootstrap=n_bootstrap, seed=seed),
        "n_test": int(y.size),
        "per_class": {
            name: {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(support[i]),
            }
            if present[i]
            else {"precision": None, "recall": None, "f1": None, "support": 0, "absent": True}
            for i, name in enumerate(names)
        },
        "confusion_matrix": cm.tolist(),
        "macro_f1": float(scores["f1"][present].mean()),
        "weighted_f1": float(np.sum(scores["f1"] * support) / support.sum()),
        "log_loss": log_loss(y, p),
        "top2_accuracy": top_k_accuracy(y, p, 2),
        "ece": {"value": expected_calibration_error(y, p, ece_bins), "bins": int(ece_bins)},
        "errors_per_class": {name: int(support[i] - cm[i, i]) for i, name in enumerate(names)},
        "top_confusions": [
            {"true": names[t], "predicted": names[q], "count": c} for t, q, c in top_confusions(cm)
        ],
    }


def predictions_table(ids: np.ndarray, y_true: np.ndarray, proba: np.ndarray) -> pa.Table:
    """Per-sample predictions: id int64, label int64, predicted int64, prob_0..prob_{k-1} float32."""
    y, p = _check(y_true, proba)
    ids = np.asarray(ids)
    if ids.shape != y.shape:
        raise ValueError(f"ids must have shape {y.shape} to match y_true, got {ids.shape}")
    columns = {
        "id": pa.array(ids.astype(np.int64)),
        "label": pa.array(y),
        "predicted": pa.array(predict(p)),
    }
    p32 = p.astype(np.float32)
    for j in range(p.shape[1]):
        columns[f"prob_{j}"] = pa.array(np.ascontiguousarray(p32[:, j]))
    return pa.table(columns)


def read_predictions(table: pa.Table | Mapping, *, source: str = "predictions") -> dict[str, np.ndarray]:
    """Arrays from a predictions table or dict: id (n,), label (n,), predicted (n,), proba (n, k).

    `source` names the table in error messages (e.g. the Parquet path it was read from).
    """
    names = list(table.column_names) if isinstance(table, pa.Table) else list(table)
    missing = [c for c in ("id", "label", "predicted", "prob_0", "prob_1") if c not in names]
    if missing:
        raise TableSchemaError(f"{source}: missing column(s) {missing}; expected id, label, predicted, prob_0..prob_<k-1>")
    k = 0
    while f"prob_{k}" in names:
        k += 1

    def column(name: str) -> np.ndarray:
        col = table[name]
        return col.to_numpy() if hasattr(col, "to_numpy") else np.asarray(col)

    proba = np.stack([column(f"prob_{j}") for j in range(k)], axis=1).astype(np.float32)
    out = {
        "id": column("id").astype(np.int64),
        "label": column("label").astype(np.int64),
        "predicted": column("predicted").astype(np.int64),
        "proba": proba,
    }
    n = proba.shape[0]
    for key in ("id", "label", "predicted"):
        if out[key].shape != (n,):
            raise TableSchemaError(f"{source}: column {key!r} has {out[key].shape[0]} rows, expected {n}")
    if n and (out["label"].min() < 0 or out["label"].max() >= k):
        raise TableSchemaError(f"{source}: column 'label' must lie in [0, {k}) for {k} prob_ columns")
    return out
