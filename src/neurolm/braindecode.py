"""NeuroLM as braindecode models, so the field's harnesses (braindecode, MOABB, Open EEG Bench) can run it as-is.

:class:`NeuroLMEncoder` is a braindecode model (``EEGModuleMixin`` + ``nn.Module``): ``(batch, n_chans, n_times)`` at
any ``sfreq`` in, pooled features (``return_features=True``) or the ``final_layer`` head's outputs out. The paper's
per-window steps run inside it (unit to µV, windowed-sinc resampling to 200 Hz, µV/100, 1-s patches of 200 samples,
channel names from ``chs_info`` looked up in NeuroLM's vocabulary), then the frozen tokenizer encoder and optionally
the instructed LM's EEG trunk. The band-pass and notch belong to the recording, not the window (a 0.1 Hz high-pass
needs far more than a few seconds of signal): :func:`recording_preprocessors` gives them as braindecode steps.

:class:`NeuroLMFeatures` is the encoder as a scikit-learn transformer of bare arrays (MOABB's pipelines).
:class:`NeuroLMTaskClassifier` is an instructed model as a scikit-learn classifier of one task: its class
probabilities are the scored answers of ``neurolm ask`` (the same windows, preprocessing and refusals).

Needs the optional extra: ``pip install 'neurolm[braindecode]'``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from torch import nn

from .data.batch import PATCH, EEGBatch
from .data.channels import INDEX, normalize_name
from .data.preprocess import TARGET_SFREQ, PreprocessConfig
from .errors import NeuroLMError

try:
    from braindecode.models.base import EEGModuleMixin
    from braindecode.preprocessing import Preprocessor
    from torchaudio.functional import resample
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("neurolm.braindecode needs braindecode: pip install 'neurolm[braindecode]'") from exc
except OSError as exc:  # pragma: no cover - torchaudio's compiled part built for another torch than this one
    raise ImportError(f"braindecode is installed but cannot be imported: torchaudio's compiled library does not "
                      f"match this torch ({exc}); install the torchaudio build for your torch (e.g. from "
                      "download.pytorch.org for a CPU-only torch)") from exc

from .lm.config import NeuroLMConfig
from .lm.mask import build_attention_mask
from .lm.model import NeuroLM
from .tokenizer.config import TokenizerConfig
from .tokenizer.encoder import TokenizerEncoder

UNITS = {"V": 1e6, "mV": 1e3, "uV": 1.0, "µV": 1.0}
"""Factor from an input unit to µV (braindecode and MNE hold signals in volts)."""


def recording_preprocessors(*, mains: float | None, config: PreprocessConfig | None = None) -> list[Preprocessor]:
    """The paper's recording-level filters as braindecode steps (``braindecode.preprocessing.preprocess``):
    band-pass ``l_freq``–``h_freq`` and the notch at ``mains`` (50 Hz in Europe/Asia, 60 Hz in the Americas; None
    skips it; a given ``config`` sets all three). Resampling and scaling happen inside :class:`NeuroLMEncoder`."""
    config = PreprocessConfig(mains=mains) if config is None else config
    steps = [Preprocessor("filter", l_freq=config.l_freq, h_freq=config.h_freq, verbose="error")]
    if config.mains is not None:
        steps.append(Preprocessor("notch_filter", freqs=[config.mains], verbose="error"))
    return steps


def map_chs_info(chs_info: Sequence[dict], *, unknown: str = "error", alias_t3_t7: bool = False
                 ) -> tuple[list[int], list[int]]:
    """Rows of the input to keep and their vocabulary indices, from MNE-style ``chs_info`` (``info["chs"]``).

    ``unknown="error"`` refuses any channel that is not a 10-20 site NeuroLM knows, naming each; ``"warn"`` leaves
    each out with a warning naming it (never silently). Two channels on one site are an error either way."""
    if unknown not in ("error", "warn"):
        raise NeuroLMError(f"unknown_channels must be 'error' or 'warn', got {unknown!r}")
    keep, idx, bad, seen = [], [], [], {}
    for row, ch in enumerate(chs_info):
        label = ch["ch_name"] if isinstance(ch, dict) else str(ch)
        name = normalize_name(label, alias_t3_t7=alias_t3_t7)
        if name is None:
            bad.append(label)
            continue
        if name in seen:
            raise NeuroLMError(f"channels {seen[name]!r} and {label!r} are both the 10-20 site {name}; pass one")
        seen[name] = label
        keep.append(row)
        idx.append(INDEX[name])
    if bad and unknown == "error":
        raise NeuroLMError(f"channel(s) {', '.join(map(repr, bad))} are not 10-20 sites in NeuroLM's vocabulary; "
                           "rename them (e.g. raw.rename_channels), drop them, or pass unknown_channels='warn' to "
                           "leave them out")
    for label in bad:
        warnings.warn(f"channel {label!r} is not a 10-20 site in NeuroLM's vocabulary; left out", UserWarning,
                      stacklevel=3)
    if not keep:
        raise NeuroLMError("none of the channels is a 10-20 site in NeuroLM's vocabulary")
    return keep, idx


class NeuroLMEncoder(EEGModuleMixin, nn.Module, license="mit", tags=["neurolm", "eeg", "foundation-model"],
                     docs_url=None, repo_url=None):
    """NeuroLM's frozen tokenizer encoder (and optionally its LM's EEG trunk) as a braindecode model.

    Parameters beyond braindecode's signal vocabulary are keyword-only and saved in ``config.json``, so
    :meth:`from_pretrained` rebuilds the model from a folder or a Hub id without the code that made it.
    """

    def __init__(
        self,
        n_outputs: int | None = None,
        n_chans: int | None = None,
        chs_info: list[dict] | None = None,
        n_times: int | None = None,
        input_window_seconds: float | None = None,
        sfreq: float | None = None,
        *,
        tokenizer_config: dict | None = None,  # TokenizerConfig as a dict; None: the tiny preset (random weights)
        lm_config: dict | None = None,  # NeuroLMConfig as a dict: run the LM's EEG trunk after the encoder
        input_unit: str = "V",  # unit of the input tensor: braindecode and MNE hold volts
        unknown_channels: str = "error",  # "warn": leave out non-10-20 channels, each with a warning
        alias_t3_t7: bool = False,  # read T3/T4/T5/T6 as T7/T8/P7/P8
        freeze: bool = True,  # keep the pretrained part frozen (only final_layer trains); False fine-tunes all
        scale_uv: float = 100.0,  # the paper's scaling: the model sees µV / 100
    ) -> None:
        super().__init__(n_outputs=n_outputs, n_chans=n_chans, chs_info=chs_info, n_times=n_times,
                         input_window_seconds=input_window_seconds, sfreq=sfreq)
        del n_outputs, n_chans, chs_info, n_times, input_window_seconds, sfreq
        if input_unit not in UNITS:
            raise NeuroLMError(f"input_unit must be one of {', '.join(UNITS)}, got {input_unit!r}")
        if self._chs_info is None:
            raise NeuroLMError("NeuroLMEncoder needs chs_info (e.g. raw.info['chs']): NeuroLM embeds each channel "
                               "by its 10-20 name")
        if self._sfreq is None:
            raise NeuroLMError("NeuroLMEncoder needs sfreq: it resamples the input to 200 Hz")
        self.tokenizer_config, self.lm_config = tokenizer_config, lm_config
        self.input_unit, self.unknown_channels, self.alias_t3_t7 = input_unit, unknown_channels, alias_t3_t7
        self.freeze, self.scale_uv = freeze, scale_uv
        keep, idx = map_chs_info(self._chs_info, unknown=unknown_channels, alias_t3_t7=alias_t3_t7)
        self.register_buffer("keep_rows", torch.tensor(keep, dtype=torch.long), persistent=False)
        self.register_buffer("chan_index", torch.tensor(idx, dtype=torch.long), persistent=False)
        ratio = Fraction(TARGET_SFREQ / float(self._sfreq)).limit_denominator(1000)
        self._up, self._down = ratio.numerator, ratio.denominator
        if lm_config is not None:
            self.lm: NeuroLM | None = NeuroLM(NeuroLMConfig.from_dict(lm_config))
            if self.lm.config.backbone is not None:
                raise NeuroLMError("the LM trunk of a Hugging Face backbone is not supported; use the encoder alone")
            self.encoder = self.lm.tokenizer
            width = self.lm.config.gpt.n_embd
        else:
            self.lm = None
            config = TokenizerConfig.from_dict(tokenizer_config) if tokenizer_config is not None else \
                TokenizerConfig.from_preset("tiny")
            self.encoder = TokenizerEncoder(config)
            width = config.n_embd
        self.n_features = width
        self.final_layer = nn.Linear(width, self.n_outputs) if self._n_outputs is not None else nn.Identity()
        self.pretrained_parts().requires_grad_(not freeze)

    def pretrained_parts(self) -> nn.Module:
        """The encoder, or the whole LM with its encoder: what ``freeze`` keeps fixed."""
        return self.encoder if self.lm is None else self.lm

    def train(self, mode: bool = True) -> NeuroLMEncoder:
        """Train the head (and, unfrozen, the LM); the tokenizer encoder stays in eval mode (no dropout)."""
        super().train(mode)
        self.encoder.eval()
        if self.freeze:
            self.pretrained_parts().eval()
        return self

    # -------------------------------------------------------------------------------------------------- inputs
    def to_batch(self, x: torch.Tensor) -> EEGBatch:
        """``(B, C, T)`` in ``input_unit`` at ``sfreq`` → NeuroLM's tokens: µV/100 at 200 Hz, 1-s patches of every
        known channel in time-major order (a trailing part-second is cut, as the pipeline cuts windows)."""
        if x.dim() != 3 or x.shape[1] != len(self._chs_info):
            raise NeuroLMError(f"expected input (batch, {len(self._chs_info)} channels, times), got {tuple(x.shape)}")
        x = x.float()[:, self.keep_rows] * (UNITS[self.input_unit] / self.scale_uv)
        if (self._up, self._down) != (1, 1):
            x = resample(x, self._down, self._up)
        seconds = x.shape[-1] // PATCH
        if seconds < 1:
            raise NeuroLMError(f"a window of {x.shape[-1]} samples at 200 Hz is shorter than NeuroLM's 1-s patch")
        b, c = x.shape[:2]
        patches = x[..., : seconds * PATCH].reshape(b, c, seconds, PATCH).transpose(1, 2).reshape(b, -1, PATCH)
        chans = self.chan_index.repeat(seconds).expand(b, -1)
        times = torch.arange(seconds, device=x.device).repeat_interleave(c).expand(b, -1)
        mask = torch.ones(b, seconds * c, dtype=torch.bool, device=x.device)
        labels = torch.full((b,), -1, dtype=torch.long, device=x.device)
        return EEGBatch(patches, chans, times, mask, labels, torch.full_like(labels, c))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the tokens of the encoder's (or the LM trunk's) last hidden states: ``(B, n_features)``."""
        batch = self.to_batch(x)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            if self.lm is None:
                h = self.encoder.VQ.encoder(batch.patches, batch.chans, batch.times, batch.mask)
            else:
                features = self.encoder.VQ.encoder(batch.patches, batch.chans, batch.times, batch.mask)
                codes = torch.zeros_like(batch.chans)  # embed_eeg needs codes only to return them
                e, _ = self.lm.embed_eeg(batch, (features, codes))
                h = self.lm.gpt(e, build_attention_mask(batch.times, batch.mask), positions=batch.times)
        return h.mean(dim=1)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        feats = self.forward_features(x)
        return feats if return_features else self.final_layer(feats)

    def reset_head(self, n_outputs: int) -> None:
        """A new, freshly initialised ``final_layer`` for ``n_outputs`` classes."""
        self._set_n_outputs(n_outputs)
        self.final_layer = nn.Linear(self.n_features, n_outputs).to(self.chan_index.device)

    # ------------------------------------------------------------------------------------------- pretrained weights
    @classmethod
    def from_neurolm(cls, source: str | Path, *, chs_info: list[dict], sfreq: float, n_outputs: int | None = None,
                     n_times: int | None = None, trunk: bool = False, vq_path: str | Path | None = None,
                     revision: str | None = None, **flags: Any) -> NeuroLMEncoder:
        """The encoder of a NeuroLM tokenizer directory, model directory (``trunk=True``: with its LM's EEG trunk),
        the authors' ``VQ.pt``, their ``NeuroLM-*.pt`` (with ``vq_path``), or a Hub id of one such directory
        (``revision`` pins it). ``flags``: :class:`NeuroLMEncoder`'s keyword-only options; the head is new."""
        from .hub import resolve

        path = Path(source) if Path(source).exists() else resolve(str(source), revision=revision).path
        lm = None
        if path.is_file() and vq_path is not None:
            lm = NeuroLM.from_reference_checkpoint(path, vq_path=vq_path)
        elif path.is_file():
            enc = TokenizerEncoder.from_reference_checkpoint(path)
        else:
            from .artifacts import model_type

            if model_type(path) == "neurolm":
                lm = NeuroLM.from_pretrained(path)
            else:
                from .tokenizer import NeuralTokenizer

                enc = NeuralTokenizer.from_pretrained(path)
        if trunk and lm is None:
            raise NeuroLMError(f"{source}: a tokenizer has no LM trunk; pass a NeuroLM model directory for trunk=True")
        if lm is not None and not trunk:
            enc = lm.tokenizer
        signal = dict(n_outputs=n_outputs, chs_info=chs_info, sfreq=sfreq, n_times=n_times)
        if trunk:
            model = cls(**signal, lm_config=lm.config.to_dict(), **flags)
            model.lm.load_state_dict(lm.state_dict())
        else:
            model = cls(**signal, tokenizer_config=asdict(enc.config), **flags)
            model.encoder.copy_encoder_side(enc)
        return model.train(False)


class NeuroLMFeatures(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: ``(n_epochs, n_chans, n_times)`` arrays → NeuroLM's pooled features, for MOABB and
    scikit-learn pipelines that hand over numpy arrays without channel names (``ch_names`` and ``sfreq`` say them).

    ``source``: anything :meth:`NeuroLMEncoder.from_neurolm` loads, or None for a randomly initialised tiny encoder
    (a control: what the architecture alone gives). Nothing is learnt in ``fit``; the encoder stays frozen."""

    def __init__(self, source: str | Path | None, *, ch_names: Sequence[str], sfreq: float, input_unit: str = "uV",
                 trunk: bool = False, batch_size: int = 64, seed: int = 0) -> None:
        self.source, self.ch_names, self.sfreq, self.input_unit = source, ch_names, sfreq, input_unit
        self.trunk, self.batch_size, self.seed = trunk, batch_size, seed

    def fit(self, X: np.ndarray, y: Sequence | None = None) -> NeuroLMFeatures:
        import mne

        chs = mne.create_info(list(self.ch_names), self.sfreq, "eeg")["chs"]
        if self.source is None:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                self.encoder_ = NeuroLMEncoder(chs_info=chs, sfreq=self.sfreq, input_unit=self.input_unit)
        else:
            self.encoder_ = NeuroLMEncoder.from_neurolm(self.source, chs_info=chs, sfreq=self.sfreq,
                                                        input_unit=self.input_unit, trunk=self.trunk)
        self.encoder_.train(False)
        return self

    @torch.no_grad()
    def transform(self, X: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        return torch.cat([self.encoder_(x[a : a + self.batch_size], return_features=True)
                          for a in range(0, len(x), self.batch_size)]).numpy()


class NeuroLMTaskClassifier(ClassifierMixin, BaseEstimator):
    """An instruction-tuned NeuroLM as a scikit-learn classifier of one of its tasks (MOABB pipelines use it as-is).

    ``predict_proba`` answers every epoch exactly as ``neurolm ask`` would (the model directory's ``training.json``
    preprocessing, channel order and refusals included) and returns the scored answers' probabilities in the task's
    class order. ``fit`` learns nothing: the model was tuned already, and refitting it per split would change what
    is being compared; it only checks the labels against the task's classes.
    """

    def __init__(self, model_dir: str | Path, task: str, *, ch_names: Sequence[str] | None = None,
                 sfreq: float | None = None, unit: str = "V", allow_untrained_task: bool = False,
                 device: str = "cpu") -> None:
        self.model_dir, self.task, self.ch_names, self.sfreq, self.unit = model_dir, task, ch_names, sfreq, unit
        self.allow_untrained_task, self.device = allow_untrained_task, device

    def _model(self):
        from .api import NeuroLM as PublicNeuroLM

        if getattr(self, "model_", None) is None:
            self.model_ = PublicNeuroLM.from_pretrained(self.model_dir, device=self.device)
        return self.model_

    def fit(self, X: np.ndarray, y: Sequence) -> NeuroLMTaskClassifier:
        from .instruct.data import get_task

        self._model()
        self.classes_ = np.array(get_task(self.task).classes)
        unknown = sorted(set(map(str, y)) - set(self.classes_))
        if unknown:
            raise NeuroLMError(f"labels {unknown} are not classes of task {self.task} "
                               f"({', '.join(self.classes_)}); map them onto the task's classes first")
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        model = self._model()
        rows = []
        for epoch in np.asarray(X):
            answers = model.ask(epoch, self.task, ch_names=self.ch_names, sfreq=self.sfreq, unit=self.unit,
                                allow_untrained_task=self.allow_untrained_task)
            rows.append(list(answers[0].probabilities.values()))
        return np.array(rows)

    def predict(self, X: np.ndarray) -> np.ndarray:
        from .instruct.data import get_task

        return np.array(get_task(self.task).classes)[self.predict_proba(X).argmax(1)]


__all__ = ["NeuroLMEncoder", "NeuroLMFeatures", "NeuroLMTaskClassifier", "map_chs_info", "recording_preprocessors"]
