"""``benchmarks/bench_moabb.py``: the SSVEP-Exo development subjects as a MOABB dataset, read offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SSVEP = ROOT.parent / "shared" / "data" / "ssvep-dev"

pytest.importorskip("moabb")
if not SSVEP.is_dir():
    pytest.skip(f"{SSVEP} absent (the SSVEP-Exo development subjects live outside the repository)",
                allow_module_level=True)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_moabb", ROOT / "benchmarks" / "bench_moabb.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:  # braindecode (for NeuroLMFeatures) cannot import here
        pytest.skip(f"bench_moabb cannot import: {exc}")
    return module


def test_local_ssvep_exo_reads_as_moabb_kalunga2016():
    """MOABB's paradigm cuts the local files with Kalunga2016's events and interval, the declared scale applies, and
    the classes are where MOABB's event ids say (CCA, which learns nothing, finds the flicker frequencies)."""
    from moabb.paradigms import SSVEP as Paradigm
    from moabb.pipelines import SSVEP_CCA

    bench = _bench()
    dataset = bench.KalungaLocal(SSVEP, scale=0.01, subjects=[1])
    assert dataset.subject_list == [1] and bench.KalungaLocal(SSVEP).subject_list == list(range(1, 9))
    epochs, y, meta = Paradigm(n_classes=3).get_data(dataset, [1], return_epochs=True)
    assert epochs.ch_names == bench.CHANNELS and epochs.info["sfreq"] == 256.0
    assert sorted(set(y)) == ["13", "17", "21"] and len(set(np.unique(y, return_counts=True)[1])) == 1
    assert meta["run"].nunique() == len(dataset.data_path(1))
    sd_uv = np.median(epochs.get_data(units="uV").std(axis=-1))
    assert 1 < sd_uv < 200  # scalp-EEG amplitudes after the declared 1/100
    accuracy = float(np.mean(SSVEP_CCA(n_harmonics=3).fit(epochs, y).predict(epochs) == y))
    assert accuracy > 0.6
