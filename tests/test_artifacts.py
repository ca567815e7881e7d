"""Model directories say what they are: ``config.json`` carries ``model_type`` and ``format_version``, and a directory
written before them (format 0) still loads through the one migration function."""

from __future__ import annotations

import json

import pytest
import torch

from neurolm.artifacts import FORMAT_VERSION, migrate_config, model_type, read_config
from neurolm.errors import NeuroLMError
from neurolm.lm import NeuroLM
from neurolm.tokenizer import NeuralTokenizer, TokenizerConfig


@pytest.fixture(scope="module")
def tokenizer() -> NeuralTokenizer:
    torch.manual_seed(0)
    return NeuralTokenizer(TokenizerConfig.from_preset("tiny", codebook_size=64)).eval()


def _strip_header(directory) -> dict:
    """Rewrite ``config.json`` as a directory written before the header existed."""
    values = json.loads((directory / "config.json").read_text())
    old = {k: v for k, v in values.items() if k not in ("model_type", "format_version")}
    (directory / "config.json").write_text(json.dumps(old, indent=2) + "\n")
    return old


def test_every_config_json_carries_type_and_version(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    NeuroLM.from_tokenizer(tokenizer, "tiny").save_pretrained(tmp_path / "lm")
    for name, kind in (("tok", "neurolm-tokenizer"), ("lm", "neurolm")):
        values = json.loads((tmp_path / name / "config.json").read_text())
        assert list(values)[:2] == ["model_type", "format_version"]
        assert (values["model_type"], values["format_version"]) == (kind, FORMAT_VERSION)
        assert model_type(tmp_path / name) == kind
        assert "model_type" not in read_config(tmp_path / name, kind)  # the model's own fields only


def test_old_style_directories_load_as_format_0(tmp_path, tokenizer):
    lm = NeuroLM.from_tokenizer(tokenizer, "tiny").eval()
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "tok")
    old_lm, old_tok = _strip_header(tmp_path / "lm"), _strip_header(tmp_path / "tok")
    assert migrate_config(old_lm) == ("neurolm", 0, old_lm)
    assert migrate_config(old_tok) == ("neurolm-tokenizer", 0, old_tok)
    assert model_type(tmp_path / "lm") == "neurolm" and model_type(tmp_path / "tok") == "neurolm-tokenizer"
    again = NeuroLM.from_pretrained(tmp_path / "lm")
    assert again.config == lm.config
    assert all(torch.equal(v, lm.state_dict()[k]) for k, v in again.state_dict().items())
    assert NeuralTokenizer.from_pretrained(tmp_path / "tok").config == tokenizer.config


def test_unknown_versions_and_types_are_refused():
    with pytest.raises(NeuroLMError, match="newer NeuroLM"):
        migrate_config({"model_type": "neurolm", "format_version": FORMAT_VERSION + 1, "gpt": {}})
    with pytest.raises(NeuroLMError, match="not a NeuroLM directory"):
        migrate_config({"model_type": "bert", "format_version": 1})
    with pytest.raises(NeuroLMError, match="neither"):
        migrate_config({"hidden_size": 8})
