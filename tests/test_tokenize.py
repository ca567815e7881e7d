"""`neurolm tokenize` on a store and on a raw EEG file gives the codes the tokenizer gives."""

import mne
import numpy as np

from neurolm.cli import main
from neurolm.data.batch import collate_windows
from neurolm.data.prepare import prepare_dataset
from neurolm.data.store import WindowStore
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig


def test_tokenize_store_and_file(tmp_path):
    info = mne.create_info(["Fp1", "Fp2", "Cz", "O1", "O2"], 250.0, "eeg")
    raw = mne.io.RawArray(np.random.default_rng(0).normal(0, 20e-6, (5, 250 * 70)), info, verbose="error")
    (tmp_path / "raw").mkdir()
    raw.save(tmp_path / "raw" / "rec_raw.fif", verbose="error")
    prepare_dataset("pretrain", tmp_path / "raw", tmp_path / "store", progress=False)
    tok = NeuralTokenizer(TokenizerConfig.from_preset("tiny")).eval()
    tok.save_pretrained(tmp_path / "tok")

    for source in (tmp_path / "store", tmp_path / "raw" / "rec_raw.fif"):
        out = tmp_path / f"{source.name}.npz"
        assert main(["tokenize", "--tokenizer", str(tmp_path / "tok"), str(source), "--out", str(out)]) == 0
        got = np.load(out)
        assert got["codes"].shape == (1, 5 * 64)  # 5 channels → one 64 s chunk of 320 tokens
        assert got["times"][0, 5] == 1 and got["chans"][0, :2].tolist() == [0, 2]
    item = WindowStore(tmp_path / "store").split("train")[0]
    expected = tok.tokenize(collate_windows([item])).numpy()
    assert np.array_equal(np.load(tmp_path / "store.npz")["codes"], expected)
    assert np.array_equal(np.load(tmp_path / "rec_raw.fif.npz")["codes"], expected)
    assert main(["tokenize", "--tokenizer", str(tmp_path / "tok"), str(tmp_path / "nope"), "--out", "x.npz"]) == 2
