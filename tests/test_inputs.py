"""Recordings from users' code: Raw, path or numpy array give the same answers; bad arrays are explained."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from neurolm import api
from neurolm.data.inputs import as_raw
from neurolm.data.preprocess import RepairWarning
from neurolm.data.readers.base import read_raw
from neurolm.errors import NeuroLMError
from neurolm.instruct.ask import ask, task_windows

HMC_LABELS = ["EEG F4-M1", "EEG C4-M1", "EEG O2-M1", "EEG C3-M2", "EOG E1-M2"]
SFREQ, SECONDS = 256.0, 70.0

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hmc_edf(tmp_path_factory):
    from conftest import write_edf

    return write_edf(tmp_path_factory.mktemp("inputs") / "night.edf", HMC_LABELS, SFREQ, SECONDS)


@pytest.fixture(scope="module")
def volts(hmc_edf) -> np.ndarray:
    """The EDF's samples as MNE reads them (V, after the file's 16-bit quantisation)."""
    return read_raw(hmc_edf).get_data()


def test_array_path_and_raw_give_the_same_answers(model, hmc_edf, volts):
    expected = ask(model, hmc_edf, "hmc", every=30)
    assert len(expected) == 2
    raw = read_raw(hmc_edf)
    assert ask(model, raw, "hmc", every=30) == expected
    with_ask = api.NeuroLM(model.config).eval()  # the API's NeuroLM: the same model with an ask method
    with_ask.load_state_dict(model.state_dict())
    for data, unit in ((volts, "V"), (volts * 1e6, "uV"), (volts.astype(np.float32), "V")):
        got = with_ask.ask(data, "hmc", every=30, ch_names=HMC_LABELS, sfreq=SFREQ, unit=unit)  # NeuroLM.ask too
        assert [(a.start, a.label) for a in got] == [(a.start, a.label) for a in expected]
        for a, b in zip(got, expected):
            assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    (louder, _) = ask(model, volts * 3, "hmc", every=30, ch_names=HMC_LABELS, sfreq=SFREQ)
    assert louder.probabilities != pytest.approx(expected[0].probabilities, abs=1e-4)  # the tolerance is meaningful


def test_array_windows_equal_the_file_windows(hmc_edf, volts):
    from_file, starts = task_windows(hmc_edf, "hmc", every=30)
    from_array, array_starts = task_windows(volts * 1e6, "hmc", every=30, ch_names=HMC_LABELS, sfreq=SFREQ,
                                            unit="uV")
    assert array_starts == starts
    for a, b in zip(from_array, from_file):
        np.testing.assert_allclose(a["signal"], b["signal"], rtol=0, atol=1e-6)  # µV/100: well below a nanovolt
        np.testing.assert_array_equal(a["chans"], b["chans"])


def test_ask_refuses_or_drops_implausible_windows_as_prepare_does(volts):
    """Windows no scalp records (median channel SD of millivolts: a damaged recording or a wrong gain) are refused,
    as `prepare` refuses such a file, instead of answered; a single damaged window is dropped with a RepairWarning."""
    uv = volts * 1e6
    with pytest.raises(NeuroLMError, match=r"^recording: task hmc: 2 of 2 windows implausible for scalp EEG"):
        task_windows(uv * 500, "hmc", every=30, ch_names=HMC_LABELS, sfreq=SFREQ, unit="uV")
    loud = uv.copy()
    loud[:, int(35 * SFREQ) : int(60 * SFREQ)] *= 500  # inside the second window only
    with pytest.warns(RepairWarning, match="1 of 2 windows implausible"):
        items, starts = task_windows(loud, "hmc", every=30, ch_names=HMC_LABELS, sfreq=SFREQ, unit="uV")
    assert starts == [0.0] and len(items) == 1


def test_as_raw_forms(hmc_edf, volts):
    raw = read_raw(hmc_edf)
    assert as_raw(raw) is raw  # returned as is, never copied or modified
    from_path = as_raw(str(hmc_edf))
    assert from_path.ch_names == HMC_LABELS and from_path.info["sfreq"] == SFREQ
    uv = volts * 1e6
    from_array = as_raw(uv, ch_names=HMC_LABELS, sfreq=SFREQ, unit="uV")
    assert from_array.ch_names == HMC_LABELS and from_array.info["sfreq"] == SFREQ
    assert set(from_array.get_channel_types()) == {"eeg"}
    np.testing.assert_allclose(from_array.get_data(), volts, rtol=1e-12, atol=0)
    from_array._data[:] = 0  # the caller's array is copied, so changing the Raw leaves it alone
    assert np.abs(uv).max() > 1
    ints = as_raw(np.round(uv).astype(np.int16), ch_names=HMC_LABELS, sfreq=256, unit="uV")  # integer µV, int sfreq
    np.testing.assert_allclose(ints.get_data(), np.round(uv) * 1e-6)


def test_array_without_known_channels_names_them(model):
    data = np.random.default_rng(0).normal(0, 2e-5, (2, 6000))
    with pytest.raises(NeuroLMError, match=r"^recording: task hmc: missing required channel\(s\) F4, C4, O2, C3; "
                                           r"the recording has: Fp1, Fp2$"):
        ask(model, data, "hmc", ch_names=["Fp1", "Fp2"], sfreq=200)


GOOD = np.random.default_rng(1).normal(0, 2e-5, (3, 1000))
NAMES = ["Fp1", "Fp2", "Cz"]
BAD_SAMPLE = GOOD.copy()
BAD_SAMPLE[1, [5, 9]] = np.nan
BAD_SAMPLE[2, 0] = np.inf


@pytest.mark.parametrize("data,kwargs,message", [
    (GOOD[0], {}, r"the EEG array must be 2-D \(channels, samples\), got shape \(1000,\); "
                  r"one channel is data\[None, :\]"),
    (GOOD[None], {}, r"got shape \(1, 3, 1000\); epochs are \(epochs, channels, samples\): pass one epoch"),
    (GOOD[:, :0], {}, r"the EEG array has no samples: shape \(3, 0\)"),
    (GOOD, {"ch_names": NAMES[:2]},
     r"ch_names has 2 labels but the array has 3 channels \(rows, shape \(3, 1000\)\)$"),
    (GOOD.T, {"ch_names": NAMES},
     r"has 1000 channels \(rows, shape \(1000, 3\)\) \(is it transposed\? the array must be \(channels, samples\)\)"),
    (GOOD, {"ch_names": NAMES, "sfreq": None}, r"a numpy array needs sfreq: ch_names \(one label per row"),
    (GOOD, {"ch_names": None, "sfreq": 200}, r"a numpy array needs ch_names: "),
    (GOOD, {"ch_names": None, "sfreq": None}, r"a numpy array needs ch_names and sfreq: "),
    (GOOD, {"ch_names": "Fp1 Fp2 Cz"}, r"ch_names must be a list of channel labels \(str\), got 'Fp1 Fp2 Cz'"),
    (GOOD, {"ch_names": ["Fp1", "Fp1", "Cz"]}, r"ch_names repeats Fp1: each row needs its own label"),
    (GOOD, {"sfreq": 0}, r"sfreq must be a positive number of samples per second, got 0"),
    (GOOD, {"sfreq": "200"}, r"sfreq must be a positive number of samples per second, got '200'"),
    (GOOD, {"sfreq": float("inf")}, r"sfreq must be a positive number .* got inf"),
    (BAD_SAMPLE, {}, r"NaN/Inf samples in channel\(s\) Fp2 \(2 of 1000 samples\), Cz \(1 of 1000 samples\)"),
    (GOOD * 1e6, {}, r"the array reaches \d+\.?\d*, implausible for EEG in volts \(unit='V'\); pass unit='uV'"),
    (GOOD, {"unit": "uV"},
     r"the array never exceeds .*, implausible for EEG in microvolts \(unit='uV'\); pass unit='V'"),
    (GOOD, {"unit": "mV"}, r"unit must be one of 'V', 'uV', got 'mV'"),
    (GOOD.astype(complex), {}, r"the EEG array must hold real numbers, got dtype complex128"),
    (np.array([["a", "b"]]), {}, r"the EEG array must hold real numbers, got dtype <U1"),
])
def test_array_errors_say_what_was_expected(data, kwargs, message):
    with pytest.raises(NeuroLMError, match=message):
        as_raw(data, **({"ch_names": NAMES, "sfreq": 200.0} | kwargs))


def test_other_inputs_are_refused_with_what_is_accepted(hmc_edf, tmp_path):
    expected = (r"recording must be an mne\.io\.Raw, a path to a file MNE reads \(EDF, BDF, FIF, …\), or a "
                r"\(channels, samples\) numpy array with ch_names and sfreq; got ")
    with pytest.raises(NeuroLMError, match=expected + "builtins.list$"):
        as_raw(GOOD.tolist())
    with pytest.raises(NeuroLMError, match=expected + "mne.epochs.EpochsArray$"):
        as_raw(mne.EpochsArray(GOOD[None], mne.create_info(NAMES, 200.0, "eeg"), verbose="error"))
    with pytest.raises(NeuroLMError, match=r"only a numpy array recording takes ch_names and sfreq \(given: ch_names, "
                                           r"sfreq\); a PosixPath carries its own channel names and sampling rate"):
        as_raw(hmc_edf, ch_names=NAMES, sfreq=200)
    with pytest.raises(NeuroLMError, match=r"\(given: sfreq\); a RawEDF carries its own"):
        as_raw(read_raw(hmc_edf), sfreq=200)
    with pytest.raises(NeuroLMError, match=r"missing\.edf: no such file"):
        as_raw(tmp_path / "missing.edf")
