"""Evaluation metrics, computed with scikit-learn.

Reconstruction metrics are computed over the *scored entries only* (the masked entries of the
evaluated nodes, flattened into one vector): MSE = mean squared error over those entries and
R^2 = 1 - SS_res / SS_tot with SS_tot taken around the mean of all scored entries
(``sklearn.metrics.r2_score`` on the flattened vectors), not per feature.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score

from fimp_bench.errors import BenchConfigError

__all__ = [
    "METRIC_DIRECTIONS",
    "classification_metrics",
    "reconstruction_metrics",
]

#: +1 = higher is better, -1 = lower is better.
METRIC_DIRECTIONS: dict[str, int] = {"mse": -1, "r2": 1, "accuracy": 1, "macro_f1": 1}


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a)


def reconstruction_metrics(pred, target, mask) -> dict[str, float]:
    """MSE and R^2 over the entries selected by ``mask``.

    Args:
        pred: predictions ``[N, F]`` (array or tensor).
        target: true values ``[N, F]``.
        mask: bool ``[N, F]``, True = scored entry (a masked entry of an evaluated node).

    Returns:
        ``{"mse": float, "r2": float}``; R^2 = 1 - SS_res/SS_tot over all scored entries pooled.
    """
    pred, target, mask = _as_numpy(pred), _as_numpy(target), _as_numpy(mask).astype(bool)
    if pred.shape != target.shape or mask.shape != target.shape:
        raise BenchConfigError(
            f"pred {pred.shape}, target {target.shape} and mask {mask.shape} must have one shape"
        )
    y_true, y_pred = target[mask].astype(np.float64), pred[mask].astype(np.float64)
    if y_true.size < 2:
        raise BenchConfigError(
            f"only {y_true.size} scored entries; reconstruction metrics need at least 2 "
            "(use more evaluation nodes or a larger mask ratio)"
        )
    return {
        "mse": float(mean_squared_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def classification_metrics(pred, target) -> dict[str, float]:
    """Accuracy and macro-F1 (unweighted mean of per-class F1 over the classes present in
    ``target`` or ``pred``).

    Args:
        pred: predicted labels ``[N]`` (ints) or logits ``[N, C]`` (argmax is taken).
        target: true labels ``[N]``.
    """
    pred, target = _as_numpy(pred), _as_numpy(target)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.shape != target.shape or target.size == 0:
        raise BenchConfigError(
            f"pred {pred.shape} and target {target.shape} must be equal, non-empty label vectors"
        )
    return {
        "accuracy": float(accuracy_score(target, pred)),
        "macro_f1": float(f1_score(target, pred, average="macro", zero_division=0)),
    }
