"""prepare at corpus scale (issue 15): damaged recordings generated here are reported with the fault and kept out of
the store, the manifest records every file's provenance, the store does not depend on --workers, float16 stores read
back within float16 precision."""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

import edfio
import numpy as np
import pytest

from neurolm.data.channels import VOCABULARY
from neurolm.data.datasets import TUH_CHANNELS
from neurolm.data.prepare import format_summary, prepare_dataset
from neurolm.data.preprocess import PreprocessConfig, RepairWarning, implausible_windows
from neurolm.data.readers.base import read_raw
from neurolm.data.store import WindowStore
from neurolm.data.synth import write_corpus
from neurolm.errors import NeuroLMError

TUH_LABELS = [f"EEG {c}-REF" for c in TUH_CHANNELS]
SECONDS, RATE = 60, 250.0  # six 10 s TUAB windows per file


def write_edf(path: Path, labels: list[str], data_uv: np.ndarray, annotation: str | None = None) -> Path:
    """An EDF(+) of ``data_uv`` (µV, one row per label) at 250 Hz, its physical range fitted to the data."""
    peak = float(np.abs(data_uv).max()) * 1.01 + 1
    signals = [edfio.EdfSignal(row, sampling_frequency=RATE, label=lab, physical_dimension="uV",
                               physical_range=(-peak, peak)) for lab, row in zip(labels, data_uv)]
    notes = [edfio.EdfAnnotation(3.0, 1.0, annotation)] if annotation else []
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals, annotations=notes).write(path)
    return path


def noise(seed: int, n_chans: int = len(TUH_LABELS), sd: float = 20.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, sd, (n_chans, int(SECONDS * RATE)))


def _in_store(store: WindowStore) -> set[str]:
    return {Path(f).name.split("_")[0] for s in store.splits for f in store.split(s).windows_by_file()}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> tuple[dict, Path]:
    """One TUAB batch (no eval/ folder, so no test split) of good files and one file per damage."""
    root = tmp_path_factory.mktemp("tuab") / "raw"
    cls = root / "train" / "normal" / "01_tcp_ar"
    good = write_edf(cls / "aagood00_s001_t000.edf", TUH_LABELS, noise(0)).read_bytes()
    write_edf(root / "train" / "abnormal" / "01_tcp_ar" / "aagood01_s001_t000.edf", TUH_LABELS, noise(1))
    write_edf(cls / "aagood02_s001_t000.edf", TUH_LABELS, noise(2))
    n_header = 256 * (len(TUH_LABELS) + 1)
    # Copied in text mode: every LF byte of the samples gained a CR before it.
    (cls / "aacrlf00_s001_t000.edf").write_bytes(good[:n_header] + good[n_header:].replace(b"\n", b"\r\n"))
    # ... and cut back to its declared size (found in a public EEGMMIDB copy): the size check cannot see it.
    text_mode = good[:n_header] + good[n_header:].replace(b"\n", b"\r\n")
    (cls / "aacrlf01_s001_t000.edf").write_bytes(text_mode[: len(good)])
    (cls / "aapad000_s001_t000.edf").write_bytes(good + bytes(700))  # trailing bytes after the declared records
    # EDF+ annotations in Latin-1 (an "é" as one byte), not the UTF-8 the standard asks for.
    latin = write_edf(cls / "aalatn00_s001_t000.edf", TUH_LABELS, noise(3), annotation="cafe spike")
    latin.write_bytes(latin.read_bytes().replace(b"cafe", b"caf\xe9"))
    loud = noise(4)
    loud[:, : int(20 * RATE)] *= 150  # the first two windows at 3 mV: a wrong unit or a damaged stretch
    write_edf(cls / "aaloud00_s001_t000.edf", TUH_LABELS, loud)
    write_edf(cls / "aaloud01_s001_t000.edf", TUH_LABELS, noise(5, sd=3000.0))  # all of it
    degenerate = noise(6)
    degenerate[3] = np.random.default_rng(7).choice([-20.0, 0.0, 20.0, 40.0], degenerate.shape[1])
    write_edf(cls / "aadegn00_s001_t000.edf", TUH_LABELS, degenerate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepairWarning)
        manifest = prepare_dataset("tuab", root, root.parent / "store", progress=False)
    return manifest, root.parent / "store"


def test_each_damage_is_reported_with_its_fault_and_kept_out_of_the_store(damaged):
    m, out = damaged
    skipped = {f["file"].split("/")[-1].split("_")[0]: f["reason"] for f in m["files"]["skipped"]}
    assert skipped.keys() == {"aacrlf00", "aacrlf01", "aaloud01", "aadegn00"}
    assert skipped["aacrlf00"].startswith("data section longer than the header declares (")
    assert re.search(r": (\d+) extra bytes\): copied in text mode, which put a CR byte before each of its \1 LF "
                     r"bytes and misaligned the samples into noise$", skipped["aacrlf00"]), skipped["aacrlf00"]
    assert re.fullmatch(r"every one of the \d+ LF bytes of its data section follows a CR byte: copied in text mode "
                        r"\(a CR put before each LF\), which misaligned the samples into noise; copy the original file "
                        r"again in binary mode", skipped["aacrlf01"]), skipped["aacrlf01"]
    assert re.fullmatch(r"6 of 6 windows implausible for scalp EEG \(median channel standard deviation above 1000 µV: "
                        r"a damaged file or a wrong unit\)\. If the samples are not in the unit the file states "
                        r"\(median channel standard deviation \d\.\d+e\+03 µV\), declare their scale: "
                        r"`scale = 0\.01` in the task file, or --scale 0\.01 for prepare and ask",
                        skipped["aaloud01"]), skipped["aaloud01"]
    assert skipped["aadegn00"].startswith("degenerate channel(s) F4 (EEG F4-REF): fewer than 16 distinct values "
                                          "(a degenerate export); the dataset needs every one of its channels")
    repaired = {f["file"].split("/")[-1].split("_")[0]: f["notes"] for f in m["files"]["repaired"]}
    (padded,) = repaired.pop("aapad000")
    sizes = re.fullmatch(r"data section longer than the header declares \((\d+) bytes, 60 records of (\d+) bytes make "
                         r"(\d+): 700 extra bytes\); the declared records are read", padded)
    assert sizes, padded
    have, record, declared = map(int, sizes.groups())
    assert have == declared + 700 and declared == 60 * record
    assert repaired == {
        "aalatn00": ["EDF+ annotations are not UTF-8; read as Latin-1"],
        "aaloud00": ["2 of 6 windows implausible for scalp EEG (median channel standard deviation above 1000 µV: a "
                     "damaged file or a wrong unit); dropped"],
    }
    assert m["implausible_windows"] == 2
    store = WindowStore(out)
    store.verify()
    assert _in_store(store) == {"aagood00", "aagood01", "aagood02", "aalatn00", "aaloud00", "aapad000"}
    windows = [store.split(s)[i] for s in store.splits for i in range(len(store.split(s)))]
    assert len(windows) == 5 * 6 + 4
    loud = [w for w in windows if w["file"].endswith("aaloud00_s001_t000.edf")]
    assert sorted(w["start"] for w in loud) == [20.0, 30.0, 40.0, 50.0]  # the two loud windows are not stored
    assert max(float(np.median(w["signal"].std(axis=1))) for w in windows) * 100 < 1000


def test_one_sample_beyond_100_mv_makes_a_window_implausible():
    windows = np.random.default_rng(0).normal(0, 0.2, (3, 4, 2000))  # 20 µV
    windows[1, 2, 100] = 1001.0  # 100.1 mV
    windows[2, 0, 5] = 999.0
    assert implausible_windows(windows, PreprocessConfig()).tolist() == [False, True, False]


def test_manifest_lists_every_file_with_its_provenance(damaged):
    m, _ = damaged
    by_name = {e["file"].split("/")[-1].split("_")[0]: e for e in m["sources"]}
    assert len(m["sources"]) == m["files"]["found"] == 10
    good, repaired, skipped = by_name["aagood01"], by_name["aaloud00"], by_name["aadegn00"]
    assert good["status"] == "prepared" and good["notes"] == [] and good["subject"] == "aagood01"
    assert good["file"] == "train/abnormal/01_tcp_ar/aagood01_s001_t000.edf"
    assert good["duration_s"] == SECONDS and good["channels"] == 23 and good["bytes"] > 23 * SECONDS * RATE * 2
    assert sum(good["windows"].values()) == 6 and set(good["windows"]) <= {"train", "val"}
    assert repaired["status"] == "repaired" and sum(repaired["windows"].values()) == 4
    assert repaired["implausible_windows"] == 2
    assert skipped["status"] == "skipped" and "degenerate channel" in skipped["reason"] and "windows" not in skipped
    assert skipped["bytes"] > 0 and skipped["subject"] == "aadegn00"
    per_split = {s: sum(e.get("windows", {}).get(s, 0) for e in m["sources"]) for s in ("train", "val", "test")}
    assert per_split == {s: m["splits"][s]["windows"] for s in per_split}
    assert m["preprocessing"]["l_freq"] == 0.1 and m["preprocessing"]["mains"] == 60.0 and m["dtype"] == "float32"


def test_an_empty_split_is_warned_about(damaged):
    m, _ = damaged
    assert m["splits"]["test"]["windows"] == 0
    assert m["warnings"] == ["split 'test' is empty: no recording or window went to it (a layout folder missing, "
                             "such as TUH's eval/ for the test split?)"]
    summary = format_summary(m)
    assert "warning: split 'test' is empty" in summary
    assert "files: 3 prepared, 3 repaired, 4 skipped; 0.10 h of EEG, 2 implausible window(s) dropped" in summary


def test_a_degenerate_channel_is_dropped_where_the_channel_set_is_free(tmp_path):
    labels = [f"EEG {c}" for c in VOCABULARY[:64]]  # 64 channels: 16 s windows
    data = noise(0, n_chans=64)
    data[2] = np.repeat([0.0, 30.0], data.shape[1] // 2)
    write_edf(tmp_path / "raw" / "rec.edf", labels, data)
    write_edf(tmp_path / "raw" / "other.edf", labels, noise(1, n_chans=64))
    with pytest.warns(RepairWarning, match="degenerate channel"):
        m = prepare_dataset("pretrain", tmp_path / "raw", tmp_path / "store", progress=False)
    assert m["files"]["repaired"] == [{"file": "rec.edf", "notes": [
        "degenerate channel(s) FP2 (EEG FP2): fewer than 16 distinct values (a degenerate export); dropped"]}]
    store = WindowStore(tmp_path / "store")
    chans = {w["file"]: w["chans"].tolist() for s in store.splits for w in (store.split(s)[i]
                                                                              for i in range(len(store.split(s))))}
    assert chans == {"rec.edf": [c for c in range(64) if c != 2], "other.edf": list(range(64))}


@pytest.fixture(scope="module")
def tusl(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("raw"), datasets=["tusl"], subjects=6, seed=1)["tusl"]


def test_store_does_not_depend_on_the_number_of_workers(tusl, tmp_path):
    one = prepare_dataset("tusl", tusl, tmp_path / "one", progress=False, workers=1)
    two = prepare_dataset("tusl", tusl, tmp_path / "two", progress=False, workers=2)
    assert one["checksums"] == two["checksums"] and one["sources"] == two["sources"]
    assert one["fingerprint"] == two["fingerprint"]


def test_float16_store_reads_back_float32_within_float16_precision(tusl, tmp_path):
    full = prepare_dataset("tusl", tusl, tmp_path / "f32", progress=False)
    half = prepare_dataset("tusl", tusl, tmp_path / "f16", progress=False, dtype="float16")
    assert half["dtype"] == "float16" and half["splits"] == full["splits"]
    a, b = WindowStore(tmp_path / "f32"), WindowStore(tmp_path / "f16")
    b.verify()
    for split in a.splits:
        half, full = ((tmp_path / kind / f"{split}.bin").stat().st_size for kind in ("f16", "f32"))
        assert half * 2 == full
        for i in range(len(a.split(split))):
            x, y = a.split(split)[i]["signal"], b.split(split)[i]["signal"]
            assert y.dtype == np.float32 and y.shape == x.shape
            # float16 keeps 11 significant bits: relative error at most 2^-11, absolute below its subnormal step
            assert np.all(np.abs(y - x) <= np.abs(x) * 2.0**-11 + 2.0**-24)
            assert not np.array_equal(x, y)  # it was stored as float16, not silently as float32


class _Killed(BaseException):
    """Stands for a kill mid-run (a BaseException: the per-file error handling does not catch it)."""


def test_a_run_stopped_while_finishing_the_splits_resumes(tusl, tmp_path, monkeypatch):
    from neurolm.data.store import SplitWriter

    whole = prepare_dataset("tusl", tusl, tmp_path / "whole", progress=False)
    finish = SplitWriter.finish

    def stop_at_val(self):
        if self.split == "val":
            raise _Killed
        return finish(self)

    monkeypatch.setattr(SplitWriter, "finish", stop_at_val)
    with pytest.raises(_Killed):
        prepare_dataset("tusl", tusl, tmp_path / "store", progress=False)
    assert (tmp_path / "store" / "train.bin").is_file() and not (tmp_path / "store" / "manifest.json").exists()
    monkeypatch.undo()
    resumed = prepare_dataset("tusl", tusl, tmp_path / "store", progress=False)
    assert resumed["checksums"] == whole["checksums"]
    WindowStore(tmp_path / "store").verify()


def test_the_text_mode_repair_example_restores_a_cut_copy(tmp_path):
    """examples/data/repair_text_mode_edf.py: a text-mode copy cut to its declared size reads again as the original,
    less its last (cut) record."""
    spec = importlib.util.spec_from_file_location(
        "repair", Path(__file__).parents[1] / "examples" / "data" / "repair_text_mode_edf.py")
    repair = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repair)
    data = noise(0, n_chans=4)
    good = write_edf(tmp_path / "good.edf", TUH_LABELS[:4], data, annotation="eyes closed")
    original = good.read_bytes()
    n_header = 256 * (4 + 2)  # four signals and the EDF+ annotation signal
    copy = tmp_path / "copy.edf"
    copy.write_bytes((original[:n_header] + original[n_header:].replace(b"\n", b"\r\n"))[: len(original)])
    with pytest.raises(NeuroLMError, match="follows a CR byte: copied in text mode"):
        read_raw(copy)
    assert repair.repair(copy, tmp_path / "fixed.edf").endswith(f"{int(SECONDS) - 1} of {int(SECONDS)} records kept")
    fixed, ref = read_raw(tmp_path / "fixed.edf"), read_raw(good)
    assert fixed.n_times == ref.n_times - int(RATE)
    np.testing.assert_array_equal(fixed.get_data(), ref.get_data()[:, : fixed.n_times])
    assert list(fixed.annotations.description) == ["eyes closed"]
