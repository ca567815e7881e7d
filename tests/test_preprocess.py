import numpy as np
import pytest

from neurolm.data.preprocess import PreprocessConfig, preprocess_array
from neurolm.errors import NeuroLMError


def _sine(freq, fs, seconds, amp=50.0):
    t = np.arange(int(fs * seconds)) / fs
    return amp * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("fs", [250.0, 256.0, 500.0, 1000.0])
def test_10hz_kept_60hz_removed_length_exact(fs):
    seconds = 40
    x = np.vstack([_sine(10, fs, seconds), _sine(60, fs, seconds), _sine(10, fs, seconds) + _sine(60, fs, seconds)])
    y = preprocess_array(x, fs, PreprocessConfig(mains=60.0))
    assert y.shape == (3, 200 * seconds) and y.dtype == np.float32
    mid = slice(2000, -2000)  # away from the filters' edge transients
    amp10 = np.sqrt(2) * y[0, mid].std() * 100  # back to µV
    assert amp10 == pytest.approx(50.0, rel=0.02)
    assert np.sqrt(2) * y[1, mid].std() * 100 < 0.05 * 50  # hum attenuated by > 26 dB
    assert np.allclose(y[2, mid], y[0, mid], atol=0.05)


def test_scaling_is_uv_over_100():
    x = _sine(10, 200.0, 60, amp=100.0)[None]
    y = preprocess_array(x, 200.0, PreprocessConfig(mains=None))
    assert np.sqrt(2) * y[0, 2000:-2000].std() == pytest.approx(1.0, rel=0.02)


def test_notch_follows_the_configured_mains():
    x = _sine(50, 500.0, 30)[None]
    kept = preprocess_array(x, 500.0, PreprocessConfig(mains=60.0))
    removed = preprocess_array(x, 500.0, PreprocessConfig(mains=50.0))
    assert kept[0, 1000:-1000].std() > 10 * removed[0, 1000:-1000].std()


def test_bad_inputs_give_clear_errors():
    with pytest.raises(NeuroLMError, match="too low"):
        preprocess_array(np.zeros((2, 1000)), 128.0, PreprocessConfig())
    x = np.zeros((3, 5000))
    x[1, 10] = np.nan
    with pytest.raises(NeuroLMError, match=r"NaN/Inf.*\[1\]"):
        preprocess_array(x, 250.0, PreprocessConfig())
