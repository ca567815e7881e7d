"""The reference point every NeuroLM number is reported beside: log band power + logistic regression.

Features: Welch log power in the delta/theta/alpha/beta/gamma bands of every channel of a window; a standardised
logistic regression fit on a store's ``train`` split, balanced accuracy on another split. The synthetic corpus is
calibrated against this baseline (``benchmarks/bench_synth_baseline.py``), so a model that does not beat it has
learned nothing a linear read-out of spectra could not.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import welch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data.store import WindowStore
from ..data.preprocess import BANDS
from ..errors import NeuroLMError


def band_features(signal: np.ndarray, sfreq: float) -> np.ndarray:
    """log band power per channel and band, flattened channel-major: ``(C * 5,)``."""
    nper = int(min(signal.shape[1], 2 * sfreq))
    freqs, psd = welch(signal, fs=sfreq, nperseg=nper, axis=-1)
    power = [psd[:, (freqs >= lo) & (freqs < hi)].mean(axis=1) for lo, hi in BANDS.values()]
    return np.log(np.stack(power, axis=1) + 1e-12).ravel()


def store_features(store: WindowStore, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Band features ``(N, C*5)`` and labels of a store split (windows at 200 Hz)."""
    items = store.split(split)
    x = np.array([band_features(np.asarray(items[i]["signal"], dtype=np.float64), 200.0) for i in range(len(items))])
    return x, np.asarray(items.labels)


def fit_predict(train: tuple[np.ndarray, np.ndarray], test_x: np.ndarray) -> np.ndarray:
    """Predictions on ``test_x`` of the baseline fit on ``train``."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
    model.fit(*train)
    return model.predict(test_x)


def fit_score(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    """Balanced accuracy on ``test`` of the baseline fit on ``train``."""
    return float(balanced_accuracy_score(test[1], fit_predict(train, test[0])))


def band_power_predictions(store: WindowStore | str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(labels, predictions)`` of the baseline on ``split`` of a task store, trained on its ``train`` split."""
    store = store if isinstance(store, WindowStore) else WindowStore(store)
    missing = [s for s in ("train", split) if s not in store.splits]
    if missing:
        raise NeuroLMError(f"{store.root}: no {missing[0]!r} split for the band-power baseline")
    x, y = store_features(store, split)
    return y, fit_predict(store_features(store, "train"), x)


def band_power_baseline(store: WindowStore | str, split: str = "test") -> float:
    """Balanced accuracy of the baseline on ``split`` of a prepared task store, trained on its ``train`` split."""
    return float(balanced_accuracy_score(*band_power_predictions(store, split)))
