"""The band-power baseline and the Markdown/HTML report renderer."""

from __future__ import annotations

import base64
import json
import re

import numpy as np

from neurolm.instruct.baseline import band_features, fit_score
from neurolm.report import Heading, Image, Paragraph, Table, write_report


def test_band_features_find_the_band_of_a_sine():
    t = np.arange(4 * 200) / 200
    alpha = np.stack([np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 2 * t)])  # 10 Hz (alpha), 2 Hz (delta)
    f = band_features(alpha, 200.0).reshape(2, 5)  # channel-major: delta, theta, alpha, beta, gamma
    assert f[0].argmax() == 2 and f[1].argmax() == 0


def test_baseline_separates_two_band_classes_and_not_noise():
    rng = np.random.default_rng(0)
    t = np.arange(2 * 200) / 200

    def windows(n):
        y = rng.integers(0, 2, n)
        x = np.array([band_features(np.sin(2 * np.pi * (10 if c else 20) * t)[None] + rng.normal(0, 1, (1, 400)),
                                    200.0) for c in y])
        return x, y

    assert fit_score(windows(60), windows(60)) > 0.9
    x, y = windows(60)
    x_test, _ = windows(200)
    assert 0.3 < fit_score((x, y), (x_test, rng.integers(0, 2, 200))) < 0.7  # labels unrelated to signals


def test_report_markdown_links_and_html_embeds(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = tmp_path / "plots" / "curve.png"
    png.parent.mkdir()
    fig.savefig(png)
    plt.close(fig)
    blocks = [Heading("Results"), Paragraph("a < b & c"), Table(["task", "BA"], [["tuab", "0.800"]]),
              Image(png, "a curve"), Image(tmp_path / "missing.png", "skipped stage")]
    md, page = write_report(blocks, tmp_path, "Demo")
    text = md.read_text()
    assert "| tuab | 0.800 |" in text and "![a curve](plots/curve.png)" in text and "missing.png" not in text
    html = page.read_text()
    assert "a &lt; b &amp; c" in html and "<td>tuab</td><td>0.800</td>" in html
    (payload,) = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert base64.b64decode(payload) == png.read_bytes()  # self-contained: the image itself, not a link


def test_text_renderer_aligns_tables():
    from neurolm.report import to_text

    text = to_text([Heading("Stores"), Table(["split", "windows"], [["train", "120"], ["val", "7"]]),
                    Paragraph("warning: split 'test' is empty")])
    assert text.splitlines() == ["Stores", "------", "split  windows", "train      120", "val          7",
                                 "warning: split 'test' is empty"]


def test_plots_leave_pyplot_and_the_backend_alone(tmp_path):
    """Library plots draw on Figure objects: a notebook's backend stays, pyplot holds no figure of ours."""
    import matplotlib
    import matplotlib.pyplot as plt

    from neurolm.demo import plot_hypnogram
    from neurolm.instruct.train import write_plot as instruct_plot
    from neurolm.lm.pretrain import write_plot as pretrain_plot
    from neurolm.train.log import read_rows

    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # what a notebook would have chosen (any backend other than Agg)
    try:
        rows = [{"split": "train", "step": s, "eeg_loss": 3.0 - s / 10, "text_loss": 5.0, "loss_answer": 1.0,
                 "loss_text": 2.0} for s in range(1, 4)]
        rows.append({"split": "val", "step": 3, "eeg_loss": 2.9, "unigram_loss": 3.1, "ba_mean": 0.5, "ba_hmc": 0.4})
        pretrain_plot(rows, tmp_path)
        (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')
        assert read_rows(tmp_path / "log.jsonl") == rows  # the one log reader skips a torn last line
        instruct_plot(read_rows(tmp_path / "log.jsonl"), tmp_path)
        plot_hypnogram([(0.0, 0, 0), (30.0, 2, 1)], ("W", "N1", "N2", "N3", "R"), tmp_path / "night.png", "night")
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == []
    finally:
        matplotlib.use(previous)
    for name in ("loss_curves.png", "night.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
