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


MIN_SUBJECTS_FOR_SUBJECT_CI = 5
"""Below this many subjects a subject bootstrap has too few distinct resamples; windows are resampled instead."""


def interval(y_true, y_pred, subjects, chance: float) -> dict:
    """The 95 % interval a report prints beside a balanced accuracy: by subject when the split has at least
    :data:`MIN_SUBJECTS_FOR_SUBJECT_CI` subjects, by window otherwise; ``includes_chance`` flags a result that may
    be no better than guessing, ``below_chance`` one surely worse (a broken model, or answers that do not parse)."""
    subjects = np.asarray(subjects)
    by_subject = len(np.unique(subjects)) >= MIN_SUBJECTS_FOR_SUBJECT_CI
    lo, hi = bootstrap_ci(y_true, y_pred, subjects if by_subject else None)
    return {"ci95": [lo, hi], "ci_resampled": "subjects" if by_subject else "windows", "includes_chance": lo <= chance,
            "below_chance": hi < chance}


def bootstrap_ci(y_true, y_pred, groups=None, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the balanced accuracy (unparseable answers count as misses).

    ``groups`` (e.g. subjects): whole groups are resampled, the honest interval when windows of one subject are
    correlated (cross-subject generalisation is what is being measured); ``None`` resamples windows. A resample that
    lacks a class still scores the classes it has. Seeded, so a report is reproducible.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    groups = np.arange(len(y_true)) if groups is None else np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    classes, y_idx = np.unique(y_true, return_inverse=True)
    hit = (y_pred == y_true).astype(np.float64)
    # per group: windows and hits of each class, so a resample's balanced accuracy is two sums (fast enough for
    # thousands of resamples; recall_score per resample took seconds)
    count = np.zeros((len(names), len(classes)))
    hits = np.zeros_like(count)
    np.add.at(count, (inverse, y_idx), 1.0)
    np.add.at(hits, (inverse, y_idx), hit)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), (n_boot, len(names)))
    n_c, h_c = count[draws].sum(1), hits[draws].sum(1)  # (n_boot, classes)
    present = n_c > 0
    stats = np.where(present, h_c / np.where(present, n_c, 1.0), 0.0).sum(1) / present.sum(1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1.0 - tail))
