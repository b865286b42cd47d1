"""Metrics from predicted probabilities: accuracy, loss, per-class P/R/F1, confusion, ROC AUC.

Plain numpy on (N, n_classes) probabilities, so training, `evaluate` and the report compute
the same numbers the same way."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, -1)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probs.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, len(classes))
    true_positive = np.diag(matrix).astype(float)
    precision = np.divide(true_positive, matrix.sum(0), out=np.zeros(len(classes)), where=matrix.sum(0) > 0)
    recall = np.divide(true_positive, matrix.sum(1), out=np.zeros(len(classes)), where=matrix.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(classes)), where=precision + recall > 0)
    picked = probs[np.arange(len(labels)), labels]
    metrics = {
        "accuracy": float((predicted == labels).mean()),
        "loss": float(-np.log(np.clip(picked, 1e-7, 1)).mean()),
        "n_images": int(len(labels)),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(matrix[k].sum()),
            }
            for k, name in enumerate(classes)
        },
        "macro_f1": float(f1.mean()),
        "classes": list(classes),
        "confusion_matrix": matrix.tolist(),
    }
    if len(classes) == 2 and len(set(labels.tolist())) == 2:
        metrics["roc_auc"] = float(binary_auroc(torch.from_numpy(probs[:, 1]), torch.from_numpy(labels)))
    return metrics


def roc_curve_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every threshold, for the ROC plot."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] == 1
    tpr = np.concatenate([[0], np.cumsum(hits) / max(hits.sum(), 1)])
    fpr = np.concatenate([[0], np.cumsum(~hits) / max((~hits).sum(), 1)])
    return fpr, tpr
