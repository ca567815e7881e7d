"""Messages that said something untrue (issue 38), pinned: a below-chance interval and its cause, the unigram
comparison's sign, a torch tensor given to ``ask``, the advice after an interruption, dependency warnings in the demo
and a line at the start of every long demo stage."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from neurolm.cli import interruption_advice, main
from neurolm.errors import NeuroLMError


def test_a_below_chance_interval_is_flagged_with_its_cause():
    from neurolm.instruct.evaluate import format_ba
    from neurolm.instruct.metrics import UNPARSEABLE, interval, paper_metrics

    y = np.arange(290) % 2
    parsed = np.full(290, UNPARSEABLE)
    parsed[:3] = 1 - y[:3]  # 3 answers parse, all wrong: 287 of 290 unparseable
    m = paper_metrics(y, parsed, 2) | interval(y, parsed, [f"s{i % 10}" for i in range(290)], 0.5)
    assert m["below_chance"] and m["includes_chance"]  # lo <= chance, as before: "may be no better than guessing"
    assert format_ba(m) == (f"{m['balanced_accuracy']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] "
                            "below chance (287 of 290 answers unparseable)")
    wrong = 1 - y  # every answer parsed and wrong: below chance, no parsing to blame
    assert format_ba(paper_metrics(y, wrong, 2) | interval(y, wrong, ["s"] * 290, 0.5)).endswith(
        "[0.000, 0.000] below chance")
    guess = np.random.default_rng(0).integers(0, 2, 290)
    assert format_ba(paper_metrics(y, guess, 2) | interval(y, guess, ["s"] * 290, 0.5)).endswith(" ≈ chance")
    # a metrics.json written before below_chance existed still formats
    assert format_ba({"balanced_accuracy": 0.5, "ci95": [0.4, 0.6], "includes_chance": True}) == \
        "0.500 [0.400, 0.600] ≈ chance"


def test_the_demo_verdict_says_below_chance():
    from neurolm.demo import _verdict

    below = {"balanced_accuracy": 0.1, "ci95": [0.0, 0.2], "includes_chance": False, "below_chance": True}
    assert _verdict({"scored": below, "baseline": below}) == "below chance"


def test_the_unigram_comparison_has_the_right_sign():
    from neurolm.lm.pretrain import STAGE, unigram_comparison

    assert unigram_comparison(0.12) == "12.0% below" and unigram_comparison(-1.5) == "150.0% above"
    report = {"size": "tiny", "steps": 2, "val": {"eeg_loss": 5.0, "eeg_gain": 1 - 5.0 / 2.0, "unigram_loss": 2.0,
                                                  "eeg_accuracy": 0.1, "eeg_perplexity": 148.4},
              "train_last": {"text_loss": 3.0}}
    text = STAGE.describe(SimpleNamespace(report=report, out_dir="runs/lm"))
    assert "val EEG loss 5.000 (150.0% above the unigram baseline 2.000)" in text and "-" not in text.split("(")[1]


def test_a_torch_tensor_is_read_as_the_array_it_holds():
    from neurolm.data.inputs import as_raw

    data = torch.randn(2, 2000, dtype=torch.float64) * 20
    raw = as_raw(data, ch_names=["C3", "C4"], sfreq=200, unit="uV")
    assert np.allclose(raw.get_data(units="uV"), data.numpy())
    with pytest.raises(NeuroLMError, match=r"^a numpy array needs ch_names and sfreq"):
        as_raw(data)  # not "a Tensor carries its own channel names": it carries none


@pytest.mark.parametrize("command, advice", [
    ("demo", "re-run `neurolm demo` with the same --out to continue: finished stages are kept"),
    ("instruct", "re-run the same command with --resume to continue from its last checkpoint"),
    ("prepare", "re-run the same command to continue: the recordings already written are kept"),
])
def test_the_interruption_advice_fits_the_command(command, advice, monkeypatch, capsys, tmp_path):
    assert advice in interruption_advice(command)
    assert ("--resume" in interruption_advice(command)) == (command == "instruct")
    if command == "demo":
        import neurolm.demo

        def interrupted(args):
            raise KeyboardInterrupt

        monkeypatch.setattr(neurolm.demo, "run", interrupted)
        assert main(["demo", "--out", str(tmp_path)]) == 130
        assert capsys.readouterr().err.strip() == f"neurolm demo: interrupted; {interruption_advice('demo')}"


def test_dependency_warnings_are_counted_and_summarised_while_ours_pass():
    from neurolm.demo import dependency_warnings, summarise_warnings

    sklearn_file = "/venv/lib/python3.11/site-packages/sklearn/linear_model/_logistic.py"
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with dependency_warnings() as counts:
            for _ in range(3):
                warnings.warn_explicit("lbfgs failed to converge (status=1):\nSTOP: TOTAL NO. OF ITERATIONS",
                                       UserWarning, sklearn_file, 469)
            warnings.warn_explicit("our own warning", UserWarning, "/work/src/neurolm/instruct/ask.py", 10)
    assert summarise_warnings(counts) == ["3 × sklearn UserWarning: lbfgs failed to converge (status=1):"]
    assert [str(w.message) for w in shown] == ["our own warning"]


def test_every_long_demo_stage_announces_itself(tmp_path, capsys):
    from neurolm.demo import _cached

    assert _cached(tmp_path / "r.json", lambda: {"x": 1}, ("pretrain", "pretraining, 100 steps")) == {"x": 1}
    assert capsys.readouterr().out == "pretrain          …  pretraining, 100 steps\n"
    _cached(tmp_path / "r.json", lambda: {"x": 2}, ("pretrain", "pretraining, 100 steps"))  # done: nothing starts
    assert capsys.readouterr().out == ""
