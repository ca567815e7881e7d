"""The band-power baseline and the Markdown/HTML report renderer."""

from __future__ import annotations

import base64
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
