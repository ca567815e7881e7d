"""A corpus of bad inputs, generated here: each gives a specific error or a documented repair, and a batch prepare
over good and bad files together keeps the good ones and lists every skipped or repaired file in the manifest."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import edfio
import mne
import numpy as np
import pytest
from scipy.io import savemat

import neurolm
from neurolm.data.channels import VOCABULARY
from neurolm.data.datasets import SEED_CHANNELS, TUH_CHANNELS
from neurolm.data.prepare import format_summary, prepare_dataset
from neurolm.data.preprocess import PreprocessConfig, RepairWarning
from neurolm.data.readers import Recording, get_reader
from neurolm.data.readers.base import read_raw
from neurolm.data.store import WindowStore
from neurolm.data.windows import process_recording
from neurolm.errors import NeuroLMError

TUH_LABELS = [f"EEG {c}-REF" for c in TUH_CHANNELS]
PRETRAIN_LABELS = [f"EEG {c}" for c in VOCABULARY[:64]]  # 64 channels → 16 s pretraining windows
# Per-signal EDF header fields in file order, each stored for every signal before the next field, with widths.
_FIELDS = (("label", 16), ("transducer", 80), ("dimension", 8), ("physical_min", 8), ("physical_max", 8),
           ("digital_min", 8), ("digital_max", 8), ("prefilter", 80), ("samples", 8), ("reserved", 32))


def write_edf(path: Path, labels: list[str], rates: float | list[float], seconds: float, *, seed: int = 0,
              flat: tuple[int, ...] = ()) -> Path:
    """20 µV noise in µV on every channel (rows in ``flat`` held at 0), each channel at its own rate if given."""
    rates = rates if isinstance(rates, list) else [rates] * len(labels)
    rng = np.random.default_rng(seed)
    signals = [edfio.EdfSignal(np.zeros(int(r * seconds)) if i in flat else rng.normal(0, 20, int(r * seconds)),
                               sampling_frequency=r, label=lab, physical_dimension="uV", physical_range=(-1000, 1000))
               for i, (lab, r) in enumerate(zip(labels, rates))]
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals).write(path)
    return path


def patch(data: bytes, field: str, signal: int, value: str) -> bytes:
    """Overwrite one per-signal header field of an EDF held in memory."""
    ns, at = int(data[252:256]), 256
    for name, width in _FIELDS:
        if name == field:
            start = at + signal * width
            return data[:start] + value.ljust(width).encode()[:width] + data[start + width :]
        at += width * ns
    raise KeyError(field)


def write_fif(path: Path, labels: list[str], data_uv: np.ndarray, sfreq: float = 200.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = mne.io.RawArray(data_uv * 1e-6, mne.create_info(labels, sfreq, "eeg"), verbose="error")
    raw.save(path, verbose="error")
    return path


@pytest.fixture(scope="module")
def small_edf(tmp_path_factory) -> bytes:
    """Three EEG channels, 250 Hz, 4 one-second records."""
    return write_edf(tmp_path_factory.mktemp("edf") / "good.edf", TUH_LABELS[:3], 250.0, 4).read_bytes()


# --- one file at a time: the reader's error names the fault --------------------------------------------------------

HEADER_FAULTS = {
    "fixed header cut": (lambda b: b[:100], r"cannot be read as EDF \(header truncated: the file has 100 bytes"),
    "signal headers cut": (lambda b: b[:700], r"header truncated: 3 signals need a 1024-byte header, the file has 700"),
    "signal count not a number": (lambda b: b[:252] + b"ab  " + b[256:], r"'number of signals' is not a number: 'ab'"),
    "header size wrong": (lambda b: b[:184] + b"2048    " + b[192:], r"declares 2048 header bytes, but its 3 signals"),
    "physical min not a number": (lambda b: patch(b, "physical_min", 1, "abc"),
                                  r"'physical minimum' of signal 'EEG FP2-REF' is not a number: 'abc'"),
    "physical min = max": (lambda b: patch(patch(b, "physical_min", 1, "500"), "physical_max", 1, "500"),
                           r"signal 'EEG FP2-REF' has physical minimum = maximum \(500\), so its scale is undefined"),
    "digital min = max": (lambda b: patch(patch(b, "digital_min", 2, "0"), "digital_max", 2, "0"),
                          r"signal 'EEG F3-REF' has digital minimum = maximum \(0\)"),
    "no whole data record": (lambda b: b[:1024 + 100], r"no complete data record after the header"),
    "duplicate EEG label": (lambda b: patch(b, "label", 2, "EEG FP1-REF"),
                            r"duplicate channel label\(s\) 'EEG FP1-REF': which signal is the site is ambiguous"),
    "zero length": (lambda b: b"", r"file is empty"),
}


@pytest.mark.parametrize("case", HEADER_FAULTS)
def test_edf_faults_give_specific_errors(case, small_edf, tmp_path):
    make, message = HEADER_FAULTS[case]
    path = tmp_path / "bad.edf"
    path.write_bytes(make(small_edf))
    with pytest.raises(NeuroLMError, match=rf"^{path}: .*{message}"):
        read_raw(path)


def test_physical_min_above_max_is_read_with_inverted_polarity(small_edf, tmp_path):
    good, inverted = tmp_path / "good.edf", tmp_path / "inverted.edf"
    good.write_bytes(small_edf)
    inverted.write_bytes(patch(patch(small_edf, "physical_min", 1, "1000"), "physical_max", 1, "-1000"))
    a, b = read_raw(good).get_data(), read_raw(inverted).get_data()
    assert np.allclose(b[1], -a[1]) and np.array_equal(b[[0, 2]], a[[0, 2]]) and np.abs(a[1]).max() > 0


def test_edf_cut_mid_record_is_read_to_its_last_whole_record(small_edf, tmp_path):
    path = tmp_path / "cut.edf"
    path.write_bytes(small_edf[:-700])  # a record is 3 × 250 × 2 = 1500 bytes: the last one is cut
    with pytest.warns(RepairWarning, match=r"data truncated: 3 of the 4 data records .* the whole records are read"):
        raw = read_raw(path)
    assert raw.n_times == 3 * 250


def test_duplicate_labels_of_unused_channels_are_allowed(tmp_path):
    raw = read_raw(write_edf(tmp_path / "two_ecg.edf", TUH_LABELS[:2] + ["ECG", "ECG"], 250.0, 2))
    assert len(raw.ch_names) == 4


def test_mixed_sampling_rates(tmp_path):
    eeg = write_edf(tmp_path / "eeg.edf", TUH_LABELS[:3], [250.0, 128.0, 250.0], 2)
    with pytest.raises(NeuroLMError, match=r"EEG channels sampled at different rates in one file "
                                           r"\(128 Hz: EEG FP2-REF; 250 Hz: EEG FP1-REF, EEG F3-REF\)"):
        read_raw(eeg)
    # A non-EEG channel at another rate is fine: MNE upsamples to the highest rate, the EEG channels are not touched.
    other = write_edf(tmp_path / "other.edf", TUH_LABELS[:2] + ["Resp"], [250.0, 250.0, 10.0], 2)
    raw = read_raw(other)
    assert raw.info["sfreq"] == 250.0 and raw.n_times == 500


def test_directory_named_like_a_recording(tmp_path):
    (tmp_path / "folder.edf").mkdir()
    with pytest.raises(NeuroLMError, match="folder.edf: is a directory, not a recording"):
        read_raw(tmp_path / "folder.edf")


def test_nan_and_inf_name_the_file_and_channels(tmp_path):
    data = np.random.default_rng(0).normal(0, 20, (64, 200 * 17))
    data[3, 100:110] = np.nan
    data[10, 7] = np.inf
    path = write_fif(tmp_path / "gaps_raw.fif", PRETRAIN_LABELS, data)
    with pytest.raises(NeuroLMError, match=rf"^{path}: NaN/Inf samples in channel\(s\) "
                                           r"EEG AF9 \(10 of 3400 samples\), EEG AF4 \(1 of 3400 samples\)$"):
        process_recording(get_reader("pretrain"), Recording(path, "s"), PreprocessConfig())


def test_flat_channel_is_dropped_where_the_channel_set_is_free(tmp_path):
    path = write_edf(tmp_path / "flat.edf", PRETRAIN_LABELS, 200.0, 17, flat=(5,))
    with pytest.warns(RepairWarning, match=r"flat\.edf: flat channel\(s\) AF5 \(EEG AF5\): peak-to-peak below 1 µV "
                                           r"over the whole recording; dropped"):
        arrays = process_recording(get_reader("pretrain"), Recording(path, "s"), PreprocessConfig())
    assert arrays["chans"].tolist() == [i for i in range(64) if i != 5]
    assert arrays["signals"].shape == (1, 63, 16 * 200)  # 1024 // 63 = 16 s windows
    assert arrays["notes"].tolist() == [
        "flat channel(s) AF5 (EEG AF5): peak-to-peak below 1 µV over the whole recording; dropped"]


def test_flat_channel_is_an_error_where_the_channel_set_is_fixed(tmp_path):
    write_edf(tmp_path / "normal" / "aaaaaaaa_s001_t000.edf", TUH_LABELS, 250.0, 11, flat=(4, 19))
    with pytest.raises(NeuroLMError, match=r"flat channel\(s\) C3 \(EEG C3-REF\), CZ \(EEG CZ-REF\): .*; the dataset "
                                           r"needs every one of its channels"):
        process_recording(get_reader("tuab"), get_reader("tuab").find(tmp_path)[0], PreprocessConfig())


def test_every_channel_flat_is_an_error_even_when_free(tmp_path):
    path = write_edf(tmp_path / "dead.edf", PRETRAIN_LABELS[:4], 200.0, 70, flat=(0, 1, 2, 3))
    with pytest.raises(NeuroLMError, match=r"dead\.edf: flat channel\(s\) FP1 .*; no channel is left"):
        process_recording(get_reader("pretrain"), Recording(path, "s"), PreprocessConfig())


def test_unknown_channel_labels(tmp_path):
    renamed = write_edf(tmp_path / "normal" / "aaaaaaaa_s001_t000.edf", TUH_LABELS[:-1] + ["EEG XYZ-REF"], 250.0, 11)
    with pytest.raises(NeuroLMError, match=r"missing required channel\(s\) T2; the recording has: .*EEG XYZ-REF"):
        process_recording(get_reader("tuab"), Recording(renamed, "a"), PreprocessConfig())
    alien = write_edf(tmp_path / "alien.edf", ["Foo", "Bar", "EOG L"], 200.0, 2)
    with pytest.raises(NeuroLMError, match=r"no 10-20 EEG channel among Foo, Bar, EOG L"):
        process_recording(get_reader("pretrain"), Recording(alien, "b"), PreprocessConfig())
    # Unknown labels beside known ones are ignored: only vocabulary channels are kept.
    mixed = write_edf(tmp_path / "mixed.edf", PRETRAIN_LABELS + ["Foo"], 200.0, 17)
    arrays = process_recording(get_reader("pretrain"), Recording(mixed, "c"), PreprocessConfig())
    assert arrays["chans"].tolist() == list(range(64)) and arrays["notes"].tolist() == []


def _hmc(root: Path, stem: str, onsets: list[float], seconds: float = 90) -> None:
    write_edf(root / f"{stem}.edf", ["EEG F4-M1", "EEG C4-M1", "EEG O2-M1", "EEG C3-M2"], 256.0, seconds)
    rows = "".join(f"{on:g}, 30, Sleep stage N2\n" for on in onsets)
    (root / f"{stem}_sleepscoring.txt").write_text("Recording onset, Duration, Annotation\n" + rows)


def test_annotations_beyond_the_end_are_dropped_and_noted(tmp_path):
    raw = tmp_path / "raw"
    _hmc(raw, "SN001", [0, 30, 60, 90, 150])  # 90 s of signal: the last two stages are past the end
    _hmc(raw, "SN002", [0, 30, 60])
    _hmc(raw, "SN003", [200, 230])  # every stage past the end
    with pytest.warns(RepairWarning, match=r"SN001\.edf: 2 event\(s\) reach past"):
        m = prepare_dataset("hmc", raw, tmp_path / "store", progress=False)
    assert m["files"]["skipped"] == [{"file": "SN003.edf", "reason": "no complete window (recording shorter than its "
                                      "events or windows)"}]
    assert m["files"]["repaired"] == [{"file": "SN001.edf", "notes": [
        "2 event(s) reach past the recording's start or end; their windows are dropped"]}]
    assert m["events_without_window"] == 2
    assert sum(s["windows"] for s in m["splits"].values()) == 6


# --- SEED .mat release --------------------------------------------------------------------------------------------


def _seed_session(path: Path, trials: list[int], seconds: float = 8) -> None:
    rng = np.random.default_rng(len(trials))
    savemat(path, {f"djc_eeg{i}": rng.normal(0, 20, (len(SEED_CHANNELS), int(200 * seconds))) for i in trials})


def test_seed_mat_batch_skips_broken_sessions(tmp_path):
    raw = tmp_path / "Preprocessed_EEG"
    raw.mkdir()
    savemat(raw / "label.mat", {"label": np.array([[1, 0, -1]])})
    _seed_session(raw / "1_20131027.mat", [1, 2, 3])
    _seed_session(raw / "2_20140404.mat", [1, 3])  # trial 2 missing
    (raw / "3_20140603.mat").write_bytes(b"")
    (raw / "4_20140705.mat").write_bytes(b"not a MATLAB file at all" * 10)
    m = prepare_dataset("seed", raw, tmp_path / "store", progress=False)
    reasons = {f["file"]: f["reason"] for f in m["files"]["skipped"]}
    assert reasons["2_20140404.mat"] == ("missing trial key(s) *_eeg2 (label.mat lists 3 trials; the file has: "
                                         "djc_eeg1, djc_eeg3)")
    assert reasons["3_20140603.mat"] == "file is empty"
    assert reasons["4_20140705.mat"].startswith("cannot be read as a MATLAB file (")
    assert len(reasons) == 3 and m["files"]["ok"] == 1
    assert sum(s["windows"] for s in m["splits"].values()) == 3 * 2  # two 4 s windows per 8 s trial


def test_seed_label_mat_faults(tmp_path):
    session = tmp_path / "1_20131027.mat"
    _seed_session(session, [1])
    rec = get_reader("seed").find(tmp_path)[0]
    savemat(tmp_path / "label.mat", {"labels": np.array([[1]])})
    with pytest.raises(NeuroLMError, match=r"label\.mat: no 'label' variable \(has: labels\)"):
        list(get_reader("seed").read(rec))
    savemat(tmp_path / "label.mat", {"label": np.array([[2]])})
    with pytest.raises(NeuroLMError, match=r"label\.mat: label code\(s\) \[2\] are not 1 / 0 / -1"):
        list(get_reader("seed").read(rec))


def test_seed_nan_names_the_session_and_channel(tmp_path):
    data = np.random.default_rng(0).normal(0, 20, (len(SEED_CHANNELS), 1600))
    data[9, :5] = np.nan
    savemat(tmp_path / "1_20131027.mat", {"djc_eeg1": data})
    savemat(tmp_path / "label.mat", {"label": np.array([[0]])})
    reader = get_reader("seed")
    with pytest.raises(NeuroLMError, match=r"1_20131027\.mat: NaN/Inf samples in channel\(s\) FZ \(5 of 1600"):
        process_recording(reader, reader.find(tmp_path)[0], PreprocessConfig(mains=50.0))


# --- directories --------------------------------------------------------------------------------------------------


def test_empty_and_missing_directories(tmp_path):
    (tmp_path / "empty" / "edf" / "train").mkdir(parents=True)  # only empty sub-directories
    with pytest.raises(NeuroLMError, match=r"empty: no tuab recordings found"):
        prepare_dataset("tuab", tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(NeuroLMError, match=r"nowhere: no such directory"):
        prepare_dataset("tuab", tmp_path / "nowhere", tmp_path / "out", progress=False)


# --- one batch over good and bad files ----------------------------------------------------------------------------


def test_tuab_batch_keeps_good_files_and_lists_every_bad_one(tmp_path):
    root = tmp_path / "raw" / "train"
    good = write_edf(root / "normal" / "aagood00_s001_t000.edf", TUH_LABELS, 250.0, 11).read_bytes()
    write_edf(root / "abnormal" / "aagood01_s001_t000.edf", TUH_LABELS, 250.0, 11, seed=1)
    bad = root / "normal"
    (bad / "aaempty0_s001_t000.edf").write_bytes(b"")
    (bad / "aatrunc0_s001_t000.edf").write_bytes(good[:3000])
    (bad / "aagarb00_s001_t000.edf").write_bytes(good[:252] + b"??  " + good[256:])
    (bad / "aaphys00_s001_t000.edf").write_bytes(patch(patch(good, "physical_min", 0, "9"), "physical_max", 0, "9"))
    (bad / "aadupl00_s001_t000.edf").write_bytes(patch(good, "label", 1, "EEG FP1-REF"))
    write_edf(bad / "aamixd00_s001_t000.edf", TUH_LABELS, [250.0] * 22 + [500.0], 11)
    write_edf(bad / "aaflat00_s001_t000.edf", TUH_LABELS, 250.0, 11, flat=(8,))
    write_edf(bad / "aaunkn00_s001_t000.edf", TUH_LABELS[:-1] + ["EEG XYZ-REF"], 250.0, 11)
    (bad / "aadirr00_s001_t000.edf").mkdir()
    (bad / "emptydir").mkdir()
    # Repaired or valid despite looking odd: cut mid-record (10 of 11 records left), inverted polarity.
    (bad / "aacut000_s001_t000.edf").write_bytes(good[:-100])
    (bad / "aainv000_s001_t000.edf").write_bytes(patch(patch(good, "physical_min", 0, "1000"), "physical_max", 0,
                                                       "-1000"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepairWarning)
        m = prepare_dataset("tuab", tmp_path / "raw", tmp_path / "store", progress=False)
    reasons = {f["file"].split("/")[-1].split("_")[0]: f["reason"] for f in m["files"]["skipped"]}
    expected = {
        "aaempty0": "file is empty",
        "aatrunc0": "cannot be read as EDF (header truncated: 23 signals need a 6144-byte header",
        "aagarb00": "cannot be read as EDF (header field 'number of signals' is not a number: '??')",
        "aaphys00": "signal 'EEG FP1-REF' has physical minimum = maximum (9)",
        "aadupl00": "duplicate channel label(s) 'EEG FP1-REF'",
        "aamixd00": "EEG channels sampled at different rates in one file (250 Hz: EEG FP1-REF",
        "aaflat00": "flat channel(s) O1 (EEG O1-REF): peak-to-peak below 1 µV",
        "aaunkn00": "missing required channel(s) T2; the recording has:",
        "aadirr00": "is a directory, not a recording",
    }
    assert reasons.keys() == expected.keys()
    for key, text in expected.items():
        assert reasons[key].startswith(text), (key, reasons[key])
    assert m["files"]["found"] == 13 and m["files"]["ok"] == 4
    assert m["files"]["repaired"] == [{"file": "train/normal/aacut000_s001_t000.edf", "notes": [
        "data truncated: 10 of the 11 data records the header declares are in the file; the whole records are read"]}]
    summary = format_summary(m)
    assert "skipped train/normal/aaempty0_s001_t000.edf: file is empty" in summary
    assert "repaired train/normal/aacut000_s001_t000.edf: data truncated: 10 of the 11" in summary
    store = WindowStore(tmp_path / "store")
    files = {store.split(s)[i]["file"] for s in store.splits for i in range(len(store.split(s)))}
    assert {f.split("/")[-1].split("_")[0] for f in files} == {"aagood00", "aagood01", "aacut000", "aainv000"}


def test_pretrain_batch_repairs_flat_channels_and_skips_nan(tmp_path):
    raw = tmp_path / "raw"
    write_edf(raw / "good.edf", PRETRAIN_LABELS, 200.0, 17)
    write_edf(raw / "flat.edf", PRETRAIN_LABELS, 200.0, 17, flat=(0, 63))
    nan = np.random.default_rng(0).normal(0, 20, (64, 200 * 17))
    nan[2, 50] = np.nan
    write_fif(raw / "nan_raw.fif", PRETRAIN_LABELS, nan)
    (raw / "empty.bdf").write_bytes(b"")
    with pytest.warns(RepairWarning, match="flat channel"):
        m = prepare_dataset("pretrain", raw, tmp_path / "store", progress=False)
    assert m["files"]["skipped"] == [
        {"file": "empty.bdf", "reason": "file is empty"},
        {"file": "nan_raw.fif", "reason": "NaN/Inf samples in channel(s) EEG FP2 (1 of 3400 samples)"},
    ]
    assert m["files"]["repaired"] == [{"file": "flat.edf", "notes": [
        "flat channel(s) FP1 (EEG FP1), PZ (EEG PZ): peak-to-peak below 1 µV over the whole recording; dropped"]}]
    store = WindowStore(tmp_path / "store")
    n_chans = sorted(store.split(s)[i]["signal"].shape[0] for s in store.splits for i in range(len(store.split(s))))
    assert n_chans == [62, 64]


# --- the package itself -------------------------------------------------------------------------------------------


def test_no_bare_except_in_the_package():
    root = Path(neurolm.__file__).parent
    bare = [f"{path.relative_to(root)}:{node.lineno}" for path in sorted(root.rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.ExceptHandler) and node.type is None]
    assert len(list(root.rglob("*.py"))) > 20 and bare == []
