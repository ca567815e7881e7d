"""Per-task metrics: the paper's protocol from parsed answers, and score-based metrics from answer probabilities.

Paper protocol: binary tasks report balanced accuracy, AUC-PR and AUROC; multi-class tasks balanced accuracy,
Cohen's kappa and weighted F1. The reference maps an answer it cannot parse to the last class and computes "AUROC" from
hard 0/1 answers. Ours: an unparseable answer (``-1``) is counted and scored as wrong for its true class (never as a
class), and for the hard-answer AUROC/AUC-PR it gets the neutral score 0.5. The scored metrics use the probability of
every allowed answer, so AUROC/AUC-PR are real ranking metrics and calibration can be measured.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (average_precision_score, balanced_accuracy_score, cohen_kappa_score, confusion_matrix,
                             f1_score, log_loss, recall_score, roc_auc_score)

UNPARSEABLE = -1


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present; an unparseable answer is a miss."""
    present = np.unique(y_true)
    recalls = recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    return float(np.mean(recalls))


def paper_metrics(y_true, y_pred, n_classes: int) -> dict[str, float]:
    """Metrics of parsed (greedy-generated) answers; ``y_pred`` holds class indices or ``UNPARSEABLE``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred, n_classes),
        "unparseable": int((y_pred == UNPARSEABLE).sum()),
        "n": int(len(y_true)),
    }
    if n_classes == 2:
        hard = np.where(y_pred == UNPARSEABLE, 0.5, (y_pred == 1).astype(float))
        out |= _binary_ranking(y_true, hard)
    else:
        labels = list(range(n_classes))
        out["cohen_kappa"] = float(cohen_kappa_score(y_true, y_pred, labels=labels + [UNPARSEABLE]))
        out["weighted_f1"] = float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0))
    return out


def scored_metrics(y_true, probs) -> dict[str, float]:
    """Metrics of answer probabilities ``(N, K)`` (rows sum to 1): argmax metrics, AUROC/AUC-PR, log-loss, ECE."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    y_pred = probs.argmax(1)
    out = {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "log_loss": float(log_loss(y_true, probs, labels=list(range(k)))),
        "ece": expected_calibration_error(y_true, probs),
        "n": int(len(y_true)),
    }
    if k == 2:
        out |= _binary_ranking(y_true, probs[:, 1])
    else:
        out["cohen_kappa"] = float(cohen_kappa_score(y_true, y_pred, labels=list(range(k))))
        out["weighted_f1"] = float(f1_score(y_true, y_pred, labels=list(range(k)), average="weighted", zero_division=0))
        present = np.unique(y_true)
        if len(present) == k:
            out["auroc"] = float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))
            onehot = np.eye(k)[y_true]
            out["auc_pr"] = float(average_precision_score(onehot, probs, average="macro"))
    return out


def _binary_ranking(y_true: np.ndarray, score: np.ndarray) -> dict[str, float]:
    if len(np.unique(y_true)) < 2:
        return {}
    return {"auc_pr": float(average_precision_score(y_true, score)), "auroc": float(roc_auc_score(y_true, score))}


def expected_calibration_error(y_true, probs, n_bins: int = 10) -> float:
    """ECE of the top-class confidence in equal-width bins (0 = perfectly calibrated)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    conf, pred = probs.max(1), probs.argmax(1)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs((pred[sel] == y_true[sel]).mean() - conf[sel].mean())
    return float(ece)


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Confusion matrix with an extra last column for unparseable answers."""
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n_classes)) + [UNPARSEABLE])
    return cm[:n_classes]
