"""Metrics against values computed by hand on small fixed arrays."""

import numpy as np
import pytest

from neurolm.instruct.metrics import (UNPARSEABLE, bootstrap_ci, confusion, expected_calibration_error, interval,
                                      paper_metrics, scored_metrics)


def test_binary_paper_metrics_by_hand():
    y = [0, 0, 0, 1, 1]
    pred = [0, 1, UNPARSEABLE, 1, 1]
    m = paper_metrics(y, pred, 2)
    # class 0 recall 1/3 (the unparseable answer is a miss, not "class 1"), class 1 recall 2/2
    assert m["balanced_accuracy"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["unparseable"] == 1 and m["n"] == 5
    # hard scores: negatives 0, 1, 0.5; positives 1, 1. Each positive beats 0 and 0.5 and ties 1 → (2 × 2.5) / 6
    assert m["auroc"] == pytest.approx(5 / 6)


def test_multiclass_paper_metrics_by_hand():
    y = [0, 0, 1, 1, 2, 2]
    pred = [0, 0, 1, 2, 2, UNPARSEABLE]
    m = paper_metrics(y, pred, 3)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # kappa over labels {0,1,2,-1}: po = 4/6; pe = sum over labels of p_true * p_pred
    po, pe = 4 / 6, (2 / 6) * (2 / 6) + (2 / 6) * (1 / 6) + (2 / 6) * (2 / 6)
    assert m["cohen_kappa"] == pytest.approx((po - pe) / (1 - pe))
    # F1 per class: c0 = 1, c1: p=1, r=.5 → 2/3, c2: p=.5, r=.5 → .5; weighted by support 2 each
    assert m["weighted_f1"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert confusion(y, pred, 3).tolist() == [[2, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]


def test_scored_metrics_rank_and_calibration():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    probs = np.stack([1 - p1, p1], 1)
    m = scored_metrics(y, probs)
    assert m["auroc"] == pytest.approx(0.75)  # one of four positive/negative pairs is misordered
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.9])))
    assert expected_calibration_error([0, 1], np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    # one sample, confidence 0.8, wrong → ECE 0.8
    assert expected_calibration_error([1], np.array([[0.8, 0.2]])) == pytest.approx(0.8)


def test_bootstrap_interval_hand_computed():
    """Two subjects: ``a`` has one class-0 hit and one class-0 miss, ``b`` two class-1 hits. A subject resample is
    aa (p = 1/4, BA 0.5: class 0 only, recall 1/2), bb (1/4, BA 1.0) or ab/ba (1/2, BA (1/2 + 1)/2 = 0.75), so
    the 2.5 % and 97.5 % quantiles are 0.5 and 1.0, and the middle half is 0.75."""
    y, pred, subjects = [0, 0, 1, 1], [0, 1, 1, 1], ["a", "a", "b", "b"]
    assert bootstrap_ci(y, pred, subjects) == (0.5, 1.0)
    assert bootstrap_ci(y, pred, subjects, level=0.4) == (0.75, 0.75)
    # by window: a resample of four windows can miss class 1 entirely and score the class-0 windows only
    lo, hi = bootstrap_ci(y, pred)
    assert lo <= 0.5 and hi == 1.0
    assert bootstrap_ci(y, pred, subjects, seed=3) == bootstrap_ci(y, pred, subjects, seed=3)  # seeded


def test_interval_resamples_subjects_only_when_there_are_enough():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.8, y, 1 - y)
    many = interval(y, pred, [f"s{i % 10}" for i in range(200)], chance=0.5)
    few = interval(y, pred, [f"s{i % 2}" for i in range(200)], chance=0.5)
    assert many["ci_resampled"] == "subjects" and few["ci_resampled"] == "windows"
    observed = np.mean([(pred[y == c] == c).mean() for c in (0, 1)])
    assert 0.6 < many["ci95"][0] < observed < many["ci95"][1] < 1.0 and not many["includes_chance"]
    guess = interval(y, rng.integers(0, 2, 200), [f"s{i % 10}" for i in range(200)], chance=0.5)
    assert guess["includes_chance"]
