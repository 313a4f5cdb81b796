"""Metrics against hand-computed values."""

import numpy as np
import pytest
import torch

from fimp_bench.errors import BenchConfigError
from fimp_bench.metrics import classification_metrics, reconstruction_metrics


def test_reconstruction_metrics_hand_computed():
    target = np.array([[1.0, 2.0, 9.0], [3.0, 100.0, 5.0]])
    pred = np.array([[2.0, 2.0, -1.0], [3.0, 0.0, 3.0]])
    mask = np.array([[True, False, False], [True, False, True]])
    # scored entries: target (1, 3, 5), pred (2, 3, 3): residuals (-1, 0, 2)
    m = reconstruction_metrics(pred, target, mask)
    assert m["mse"] == pytest.approx((1 + 0 + 4) / 3)
    # SS_tot around the pooled mean 3: 4 + 0 + 4 = 8; SS_res = 5 -> R^2 = 1 - 5/8
    assert m["r2"] == pytest.approx(1 - 5 / 8)


def test_reconstruction_metrics_accept_tensors_and_check_shapes():
    t = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    m = reconstruction_metrics(t, t, torch.ones(2, 2, dtype=torch.bool))
    assert m == {"mse": 0.0, "r2": 1.0}
    with pytest.raises(BenchConfigError, match="one shape"):
        reconstruction_metrics(t, t[:1], torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(BenchConfigError, match="scored entries"):
        reconstruction_metrics(t, t, torch.zeros(2, 2, dtype=torch.bool))


def test_classification_metrics_hand_computed():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    m = classification_metrics(p, y)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # F1 per class: 0 -> P=1/2, R=1/2, F1=1/2; 1 -> P=2/3, R=1, F1=0.8; 2 -> 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_classification_metrics_from_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    m = classification_metrics(logits, torch.tensor([0, 1, 1]))
    assert m["accuracy"] == pytest.approx(2 / 3)
