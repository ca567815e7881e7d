"""`neurolm demo --quick`: every stage runs on the smallest synthetic corpus and the report holds all six tasks."""

from __future__ import annotations

import base64
import io
import json
import math
from html.parser import HTMLParser

import pytest
from conftest import interrupt_at
from PIL import Image

from neurolm.cli import main
from neurolm.data.datasets import TASK_NAMES
from neurolm.demo import QUICK
from neurolm.lm.pretrain import PretrainTask
from neurolm.train import read_meta

TASKS = TASK_NAMES


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


QUICK_PRETRAIN_STEPS = QUICK.pretrain_steps


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A quick demo with training seed 1 stopped by Ctrl-C inside pretraining, then run again: it continues that
    stage's checkpoint."""
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        interrupt_at(mp, PretrainTask, step=4)
        assert main(["demo", "--quick", "--seed", "1", "--out", str(out)]) == 130
    assert read_meta(out / "pretrain")["step"] == 5 and not (out / "pretrain" / "report.json").exists()
    assert main(["demo", "--quick", "--seed", "1", "--out", str(out)]) == 0
    return out


def test_seed_reaches_every_training_stage(demo_dir):
    for stage in ("tokenizer", "pretrain", "instruct"):
        config = json.loads((demo_dir / stage / "training_state" / "train_config.json").read_text())
        assert config["seed"] == 1, stage


def test_a_training_stage_interrupted_inside_continues(demo_dir):
    assert read_meta(demo_dir / "pretrain")["step"] == QUICK_PRETRAIN_STEPS
    rows = [json.loads(line) for line in (demo_dir / "pretrain" / "log.jsonl").read_text().splitlines()]
    # every step logged exactly once: the rerun resumed after step 5 instead of starting over or failing
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, QUICK_PRETRAIN_STEPS + 1))
    assert json.loads((demo_dir / "pretrain" / "report.json").read_text())["steps"] == QUICK_PRETRAIN_STEPS


def test_quick_demo_reports_every_task(demo_dir, capsys):
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert set(metrics) == set(TASKS)
    for task in TASKS:
        m = metrics[task]
        for value in (m["paper"]["balanced_accuracy"], m["scored"]["balanced_accuracy"], m["band_power_baseline"]):
            assert math.isfinite(value) and 0.0 <= value <= 1.0
        assert m["n"] > 0 and m["paper"]["unparseable"] <= m["n"]
        assert m["band_power_baseline"] == m["baseline"]["balanced_accuracy"]
        for part in ("paper", "scored", "baseline"):
            lo, hi = m[part]["ci95"]
            assert 0.0 <= lo <= hi <= 1.0
    md = (demo_dir / "report.md").read_text()
    assert all(f"| {t} |" in md for t in TASKS)


def test_html_report_is_self_contained_and_its_images_load(demo_dir):
    parser = _Images()
    parser.feed((demo_dir / "report.html").read_text())
    # six confusion + six recall plots, three training curves, code usage, reconstructions, the hypnogram
    assert len(parser.sources) == 18
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")  # no file or network reference
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()  # decodes the pixels: a truncated or corrupt PNG raises here
        assert min(image.size) > 50


def test_rerun_continues_from_finished_stages(demo_dir, capsys):
    before = (demo_dir / "instruct" / "model.safetensors").stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(demo_dir)]) == 0
    assert (demo_dir / "instruct" / "model.safetensors").stat().st_mtime_ns == before
    assert "tuab" in capsys.readouterr().out


def test_api_demo_takes_a_string_path(demo_dir):
    from neurolm import api

    summary = api.demo(str(demo_dir), quick=True)  # every stage is finished: this only rebuilds the report
    assert summary == json.loads((demo_dir / "metrics.json").read_text()) and set(summary) == set(TASKS)
